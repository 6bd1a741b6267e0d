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


def test_every_subcommand_has_a_description_an_example_and_help_for_every_option():
    import argparse

    from jobs.cli import build_parser

    def commands(parser, path=()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from commands(sub, (*path, name))
        if path:
            yield path, parser

    leaves = [(path, p) for path, p in commands(build_parser())
              if not any(isinstance(a, argparse._SubParsersAction) and a.required for a in p._actions)]
    assert {" ".join(path) for path, _ in leaves} >= {"run", "list", "certify", "leaderboard", "weights",
                                                     "weights fetch", "train finetune", "train distill"}
    for path, p in leaves:
        assert p.description, path
        assert p.epilog and "example" in p.epilog, path
        missing = [a.dest for a in p._actions if not a.help and not isinstance(a, argparse._SubParsersAction)]
        assert not missing, (path, missing)
