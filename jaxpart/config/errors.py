"""The one exception for bad user input: a one-line message naming the field and the value."""


class ConfigError(ValueError):
    """Bad user input: a one-line message naming the field and the value."""
