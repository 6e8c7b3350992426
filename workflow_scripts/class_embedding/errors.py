"""The one exception type for bad input: its message names the file or key and the fix."""


class InputError(RuntimeError):
    """Raised for user-fixable problems: missing data, corrupt files, bad config values."""
