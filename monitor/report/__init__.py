"""Post-operative report: one procedure's safety record, from verified audit-ledger entries.

`model.py` gathers the facts (verification first), `charts.py` draws SVG charts with
matplotlib, `html.py` renders the self-contained HTML page (and the optional PDF), and
`cli.py` adds `telesafe report`.
"""
