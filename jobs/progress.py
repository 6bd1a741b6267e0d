"""Progress bars that read well in a terminal and in a log file.

In a terminal a bar redraws itself in place (tqdm). Redirected to a file or a pipe, the
same bar writes one plain line at most every :data:`LOG_EVERY` seconds, and no carriage
returns or cursor movements, so a log of a long run stays readable line by line.
"""

from __future__ import annotations

import sys
from typing import IO

#: seconds between two progress lines when the output is not a terminal
LOG_EVERY = 15.0


class LineStream:
    """A text stream that turns tqdm's in-place redraws into whole lines."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def write(self, text: str) -> int:
        line = text.replace("\r", "").replace("\x1b[A", "").strip("\n")
        if line.strip():
            self.stream.write(line.rstrip() + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def bar(*, file: IO[str] | None = None, **options):
    """``tqdm(**options)`` on ``file`` (default stderr), in line mode when ``file`` is not a terminal."""
    from tqdm import tqdm

    file = sys.stderr if file is None else file
    if hasattr(file, "isatty") and file.isatty():
        return tqdm(file=file, **options)
    options.pop("position", None)
    options.pop("dynamic_ncols", None)
    return tqdm(file=LineStream(file), mininterval=LOG_EVERY, ascii=True, ncols=100, **options)


__all__ = ["LOG_EVERY", "LineStream", "bar"]
