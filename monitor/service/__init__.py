"""The Kafka-driven monitor service: ingest thread, engine loop, publishers, HTTP endpoints."""
