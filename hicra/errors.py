"""User-facing errors: the CLI prints them as one line and exits non-zero, never with a stack trace."""


class UserError(Exception):
    """Something the user can act on; its message is the whole story (value, what is allowed, what to change)."""


class ConfigError(UserError, ValueError):
    """A bad config value, file or path supplied by the user. The message names the value and what is allowed."""


class TrainingError(UserError, RuntimeError):
    """A run that cannot go on (diverged, out of memory); the message says which setting to change."""
