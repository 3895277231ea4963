"""Core's accelerators (CPU). Others come from backend packages through entry points."""
