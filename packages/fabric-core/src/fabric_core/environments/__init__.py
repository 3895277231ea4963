"""Cluster environments: how a process learns its rank from the system that started it."""
