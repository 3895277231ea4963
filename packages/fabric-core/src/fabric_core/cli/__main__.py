"""``python -m fabric_core.cli``: the same as the ``fabric`` command."""

from fabric_core.cli.main import main

main()
