"""Policy packs: versioned YAML data that sets every threshold the rules engine enforces."""
