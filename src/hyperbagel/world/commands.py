"""``hyperbagel world …`` and ``hyperbagel eval …`` commands (filled in by the Shapes World work)."""


def add_commands(subparsers) -> None:
    pass
