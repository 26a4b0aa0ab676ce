"""The command line, one module per area, each with an ``add_commands(subparsers)`` that ``cli.py`` calls: they
sit above everything they run, so no library module imports a command."""
