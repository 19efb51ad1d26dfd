"""Post-operative report: one procedure's safety record, from verified audit-ledger entries.

`monitor.audit.verified` supplies the verified entries; `build.py` gathers one run's facts
into the `model.py` dataclasses (the timeline's selection and wording in `timeline.py`),
`charts.py` draws SVG charts with matplotlib, `summary.py` says it in plain words,
`html.py` renders the self-contained HTML page (and the optional PDF), and `cli.py` adds
`telesafe report`.
"""
