"""The ICD §7 rule families, one module each, behind one contract (`base.Rule`).

A procedure holds one instance of each family (`ProcedureMonitor.rules`, in the order in
which their timers run and their re-arm health problems are listed). Outcomes go to the
procedure's `Latch` (`monitor/engine/latch.py`); a rule never issues a command itself.

To add a family: implement `Rule` in a new module and add an instance to
`ProcedureMonitor.rules`. Its records are then routed to it by type, its `deadline()`
joins the procedure's `next_deadline()`, its `tick()` runs at it and its `health()` joins
the re-arm checks, so none of those can be forgotten.
"""
