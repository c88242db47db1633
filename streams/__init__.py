"""Faust app, topics and agents: ingest, validate, route, score, index, alert."""
