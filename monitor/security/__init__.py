"""ICD §8 authentication: Ed25519 signatures over the exact record value bytes."""
