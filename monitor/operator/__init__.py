"""Operator tools: publish ICD §5 requests (re-arm, notes) to the operator topic."""
