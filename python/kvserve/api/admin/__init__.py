"""Operational routes: health, ping, version."""
