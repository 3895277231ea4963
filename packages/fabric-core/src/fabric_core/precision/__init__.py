"""Core's precision implementations: true dtypes and autocast mixed precision."""
