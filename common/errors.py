"""The one exception type for bad user input: the CLI turns it into a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input from the user. The message says what is wrong and how to fix it, in one line."""


class SettingError(UserError):
    """A setting's value is not allowed. `key` is the setting's field name: where the value came from decides how
    the setting is named in the message (a config loader names it by its dotted config key, the CLI by its
    option), so a settings type checks each value once, whoever set it."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key} {problem}")
        self.key, self.problem = key, problem

    def named(self, name: str) -> UserError:
        """The same problem, with the setting called `name` (e.g. `--classifier` or `config key analyses.x`)."""
        return UserError(f"{name} {self.problem}")
