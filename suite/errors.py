"""Errors the suite raises for bad input: one clear line, caught at the CLI edge."""


class SuiteError(Exception):
    """Bad input or configuration: the message says what was expected and what was found."""


class UnknownNameError(SuiteError, KeyError):
    """A registry lookup for a name nobody registered."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])
