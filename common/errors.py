"""The one exception type for bad user input: the CLI turns it into a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input from the user. The message says what is wrong and how to fix it, in one line."""
