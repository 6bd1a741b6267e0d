"""Progress bars redirected to a file write readable lines, not carriage-return redraws."""

import io

from jobs.progress import LineStream, bar


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_a_redirected_bar_writes_plain_lines_and_few_of_them():
    out = io.StringIO()
    progress = bar(total=1000, desc="cells", unit="cell", file=out, position=3, dynamic_ncols=True)
    for _ in range(1000):
        progress.update(1)
    progress.close()
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert 1 <= len(lines) <= 3 and lines[-1].startswith("cells: 100%") and "1000/1000" in lines[-1]


def test_a_terminal_keeps_the_redrawing_bar():
    out = Tty()
    progress = bar(total=3, desc="x", file=out, mininterval=0)
    progress.update(3)
    progress.close()
    assert "\r" in out.getvalue()


def test_the_line_stream_drops_redraw_codes():
    out = io.StringIO()
    LineStream(out).write("\r a 10%|#   | \r")
    assert out.getvalue() == " a 10%|#   |\n"
