"""The ``lipsim`` command line: run a config, certify a metric, list plugins, build a leaderboard, train,
list and fetch weights."""

from __future__ import annotations

import argparse
import sys

from suite.errors import SuiteError


def _list(args) -> int:
    from suite.registry import REGISTRIES

    kinds = [args.kind] if args.kind else list(REGISTRIES)
    for kind in kinds:
        print(f"{kind}:")
        rows = REGISTRIES[kind].describe()
        notes = {}
        if kind == "metrics":  # whether each metric's published weights are on this machine (read-only)
            from jobs.weights import metric_notes

            notes = metric_notes()
        if kind in ("attacks", "distance-attacks"):
            notes = _attack_notes(REGISTRIES[kind])
        width = max((len(name) for name, _ in rows), default=0)
        for name, description in rows:
            note = f"  [{notes[name]}]" if name in notes else ""
            print(f"  {name.ljust(width)}  {_plain(description)}{note}")
    return 0


def _plain(text: str) -> str:
    """A docstring line without reStructuredText markup (``code``, :func:`x`, *emphasis*)."""
    import re

    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "").replace("`", "").replace("**", "")


def _attack_notes(registry) -> dict[str, str]:
    """``name -> "aliases …; threats …; norms …"`` for every attack of ``registry`` (from the classes)."""
    out = {}
    for name in registry.names():
        try:
            factory = registry.get(name)
        except SuiteError:
            continue
        parts = []
        aliases = registry.aliases(name)
        if aliases:
            parts.append("aliases " + ", ".join(aliases))
        threats = getattr(factory, "threats", None)
        if threats:
            parts.append("threats " + ", ".join(threats))
        norms = getattr(factory, "norms", None)
        if norms:
            parts.append("norms " + ", ".join(norms))
        if parts:
            out[name] = "; ".join(parts)
    return out


def _run(args) -> int:
    from jobs.benchmark import run_main

    return run_main(args)


def _certify(args) -> int:
    from jobs.benchmark import report, run
    from jobs.cluster import parse_option
    from suite.config import parse_config

    try:
        from suite.config import parse_eps

        for value in args.eps:  # a bad budget is named as the flag the user typed
            parse_eps(value, "--eps")
        metric_options = dict(parse_option(o) for o in args.metric_option)
        if args.weights:
            metric_options["weights"] = args.weights
        dataset_options = dict(parse_option(o) for o in args.dataset_option)
        if args.root:
            dataset_options["root"] = args.root
        dataset = {"name": args.dataset, "splits": args.split, "options": dataset_options}
        if args.limit:
            dataset["limit"] = args.limit
        data = {
            "run": {"name": args.name, "results": args.results or f"results/{args.name}"},
            "metrics": [{"name": args.metric, "options": metric_options}],
            "datasets": [dataset],
            "evaluations": [{"kind": "natural"}, {"kind": "certified", "threats": args.threat, "eps": args.eps}],
        }
        config = parse_config(data, source="lipsim certify")
        summary = run(config, address=args.address, progress=not args.no_progress, wait=getattr(args, "wait", 0.0))
    except SuiteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return report(summary)


def _leaderboard(args) -> int:
    from pathlib import Path

    import polars as pl

    from leaderboard import build, text_table

    root = Path(args.results)
    if not (root / "cells").is_dir():
        print(f"error: {str(root)!r} holds no results (expected a folder with cells/ written by `lipsim run`)",
              file=sys.stderr)
        return 2
    parquet, html = build(root, args.out)
    from leaderboard.publish import damaged_warnings

    for line in damaged_warnings(html):
        print(line, file=sys.stderr)
    print(text_table(pl.read_parquet(parquet)))
    print(f"leaderboard: {html}\ntable: {parquet} (also {html.with_suffix('.csv').name}, "
          f"{html.with_suffix('.json').name}, {html.with_suffix('.md').name})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from jobs.benchmark import add_arguments
    from jobs.train.cli import add_parser as add_train_parser
    from jobs.weights import add_parser as add_weights_parser

    import suite

    parser = argparse.ArgumentParser(prog="lipsim", description="Robustness benchmark for perceptual similarity metrics.")
    parser.add_argument("--version", action="version", version=f"lipsim-suite {suite.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, summary: str, example: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".",
                              epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter)

    p = command("run", "run a TOML config: train, evaluate the grid, build the leaderboard",
                "lipsim run configs/demo.toml")
    p.add_argument("config", help="TOML run config, e.g. configs/demo.toml")
    add_arguments(p)
    p.set_defaults(func=_run)

    p = command("list", "list registered metrics, attacks, distance attacks and datasets", "lipsim list attacks")
    p.add_argument("kind", nargs="?", choices=["metrics", "attacks", "distance-attacks", "datasets"],
                   help="only this registry (default: all of them)")
    p.set_defaults(func=_list)

    p = command("certify", "certified 2AFC scores of a certifiable metric on a dataset",
                "lipsim certify --metric lipsim --weights models/lipsim_small.pth --dataset nights --root /data/nights")
    p.add_argument("--metric", default="lipsim", help="registered metric to certify (default: lipsim)")
    p.add_argument("--weights", help="weights of the metric, file or folder (default: its own lookup)")
    p.add_argument("--metric-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a constructor option of the metric, repeatable (default: none)")
    p.add_argument("--dataset", default="synthetic-2afc", help="registered 2AFC dataset (default: synthetic-2afc)")
    p.add_argument("--split", nargs="+", default=["test"], help="splits to certify (default: test)")
    p.add_argument("--root", help="dataset root folder, for nights and bapps (default: none)")
    p.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a dataset option, repeatable (default: none)")
    p.add_argument("--limit", type=int, help="first N triplets only (default: all)")
    p.add_argument("--eps", nargs="+", default=["36/255", "72/255", "108/255"],
                   help="ℓ2 budgets, fractions allowed (default: 36/255 72/255 108/255)")
    p.add_argument("--threat", nargs="+", default=["ref"], choices=["ref", "all"],
                   help="threat models: ref (reference only) or all (default: ref)")
    p.add_argument("--name", default="certify", help="run name (default: certify)")
    p.add_argument("--results", help="results folder (default: results/NAME)")
    p.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else a local cluster)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_certify)

    p = command("leaderboard", "rebuild the leaderboard of a results folder", "lipsim leaderboard results/demo")
    p.add_argument("results", help="results folder, e.g. results/demo")
    p.add_argument("--out", metavar="FILE", help="the page to write (default RESULTS/leaderboard.html); its "
                                                 ".parquet, .csv, .json and .md companions take the same name")
    p.set_defaults(func=_leaderboard)

    add_weights_parser(sub)

    add_train_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SuiteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished cells are kept; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
