"""The pure rules engine: records and a clock in, decisions out. No Kafka, disk or wall time."""
