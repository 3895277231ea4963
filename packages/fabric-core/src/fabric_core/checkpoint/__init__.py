"""Checkpoint writing, reading and state conversion."""
