"""ICD §9 recordings: write what a monitor received, and replay it through the pure engine."""
