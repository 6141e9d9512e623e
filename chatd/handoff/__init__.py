"""Handing transcripts to ticketing backends through the outbox (docs/handoff.md)."""
