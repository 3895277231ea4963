"""The ``fabric`` command line."""
