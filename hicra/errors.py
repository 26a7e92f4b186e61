"""User-facing errors: the CLI prints them as one line and exits non-zero, never with a stack trace."""


class ConfigError(ValueError):
    """A bad config value, file or path supplied by the user. The message names the value and what is allowed."""
