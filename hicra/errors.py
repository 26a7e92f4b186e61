"""User-facing errors: the CLI prints them as one line and exits non-zero, never with a stack trace."""


class UserError(Exception):
    """Something the user can act on; its message is the whole story (value, what is allowed, what to change)."""


class ConfigError(UserError, ValueError):
    """A bad config value, file or path supplied by the user. The message names the value and what is allowed."""


class TrainingError(UserError, RuntimeError):
    """A run that cannot go on (diverged, out of memory); the message says which setting to change."""


class Preempted(Exception):
    """The run was stopped by SIGTERM or SIGUSR1 (a scheduler's stop or pre-emption warning) at a safe point, with a
    checkpoint when one could be written; the CLI exits with 128 + the signal number (hicra/training/preemption.py)."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message)
        self.signum = signum
