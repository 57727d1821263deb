"""The one exception type a user sees: a readable message that names the problem and the fix."""


class KitError(Exception):
    """Bad input or a missing artifact; the CLI prints the message without a traceback."""
