"""Safety case tooling: the hazard log (docs/safety/hazards.yaml) and its traceability."""
