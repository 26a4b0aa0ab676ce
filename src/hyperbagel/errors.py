"""User-facing errors and stops: the CLI, the API and the demo print these as one clear message, never a stack trace."""

import signal


class HyperBagelError(Exception):
    """An error caused by the user's input or files, with a message meant for people."""


class Interrupted(Exception):
    """A run stopped by a signal after a step, its checkpoint written."""

    def __init__(self, signum: int | None, step: int):
        self.signum, self.step = signum, step
        name = signal.Signals(signum).name if signum else "a signal to another process"
        super().__init__(f"stopped by {name} after step {step}, its checkpoint written; "
                         "run the same command to resume")

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by the signal (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + (self.signum or signal.SIGTERM)
