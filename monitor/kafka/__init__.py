"""Thin Kafka layer: client settings and the producer/consumer wiring. No safety logic lives here."""
