"""The wire contract of ICD v1 (../shared/ICD.md): models, topics and decoding."""
