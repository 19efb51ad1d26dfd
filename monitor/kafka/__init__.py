"""Thin Kafka layer: client settings shared by every client. No safety logic lives here."""
