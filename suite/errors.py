"""Errors the suite raises for bad input: one clear line, caught at the CLI edge."""


class SuiteError(Exception):
    """Bad input or configuration: the message says what was expected and what was found."""


class UnknownNameError(SuiteError, KeyError):
    """A registry lookup for a name nobody registered."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class MissingWeightsError(SuiteError):
    """A metric's weights file is not on this machine: the cell is *not evaluated*, which is not a failure.

    ``tag`` names the weights (``lipsim weights`` lists them), ``file`` the missing file and
    ``places`` every path that was looked at, in order.
    """

    def __init__(self, tag: str, file: str, places: list[str]):
        self.tag, self.file, self.places = tag, file, list(places)
        super().__init__(f"weights {tag!r}: expected {file} in {', '.join(places) or 'no place'}; "
                         f"`lipsim weights fetch {tag}` downloads it")

    def __reduce__(self):  # survives pickling through Ray with its fields
        return (type(self), (self.tag, self.file, self.places))
