"""``lipsim train finetune …`` and ``lipsim train distill …``: train one LipSim model on Ray Train.

The flags mirror the keys of a ``[[train]]`` table (:mod:`jobs.train.spec`); a flag
left out keeps the table's default. Relative paths are relative to the current
directory. Without ``--address`` (or ``RAY_ADDRESS``, which ``ray job submit`` sets)
a local Ray cluster with every core is started for the run. Rerunning the same
command resumes an interrupted run and does nothing for a finished one.

Examples::

    lipsim train finetune --preset tiny --dataset synthetic-2afc --dataset-option count=512 \\
        --epochs 4 --output models/lipsim-tiny
    lipsim train distill --preset small --images /data/imagenet/train --teacher dreamsim \\
        --epochs 40 --lr 0.01 --betas 0.5 0.9 --num-workers 8 --use-gpu --output models/lipsim-distilled

``python -m jobs.train.cli finetune …`` is the same command without the rest of the CLI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs.cluster import connect, parse_option
from suite.errors import SuiteError


def _common(p: argparse.ArgumentParser, stage: str) -> None:
    p.add_argument("--name", help=f"label of the model (default lipsim-{stage})")
    p.add_argument("--preset", help="LipSim architecture: tiny, small, medium, large (default tiny)")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset field, e.g. conv_depth=2")
    p.add_argument("--init", help="start from this checkpoint (our folder, or a reference .pth)")
    p.add_argument("--dataset", help="registered 2AFC dataset" + (" (default synthetic-2afc)" if stage == "finetune"
                                                                   else " for a per-epoch validation score"))
    p.add_argument("--split", help="training split (default train)")
    p.add_argument("--val-split", help="validation split (default val; '' for none)")
    p.add_argument("--root", help="dataset root folder (nights, bapps)")
    p.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a dataset option, repeatable, e.g. image_size=64 (default: none)")
    p.add_argument("--val-option", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset option for the validation split only, e.g. count=128")
    p.add_argument("--epochs", type=int, help="training epochs (default 4)")
    p.add_argument("--batch-size", type=int, help="global batch size, split over the workers")
    p.add_argument("--lr", type=float, help="base learning rate of Adam (default 1e-3)")
    p.add_argument("--betas", type=float, nargs=2, metavar=("BETA1", "BETA2"), help="Adam betas")
    p.add_argument("--warmup-epochs", type=float, help="linear warm-up length in epochs (fractions allowed)")
    p.add_argument("--decay", choices=["cosine", "step", "constant"], help="learning-rate decay after warm-up")
    p.add_argument("--num-workers", type=int, help="Ray Train workers (data parallel)")
    p.add_argument("--cpus-per-worker", type=int, help="CPU cores per worker (torch threads on CPU)")
    p.add_argument("--use-gpu", action="store_true", default=None, help="one GPU per worker")
    p.add_argument("--loader-workers", type=int, help="DataLoader processes per worker")
    p.add_argument("--seed", type=int, help="seed of the initialisation and the data order (default 0)")
    p.add_argument("--cache-dir", help="suite cache (datasets, teacher embeddings)")
    p.add_argument("--output", help="output folder (default models/NAME)")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local cluster)")
    p.add_argument("--worker-logs", action="store_true", help="forward the workers' logs to this terminal")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``train finetune`` and ``train distill`` to the ``lipsim`` command's subparsers."""
    train = subparsers.add_parser("train", help="train LipSim on Ray Train (distill, then fine-tune)")
    stages = train.add_subparsers(dest="stage", required=True)

    p = stages.add_parser("finetune", help="fine-tune on a 2AFC dataset with the hinge loss",
                          description="Fine-tune LipSim on a 2AFC dataset with the hinge loss, on Ray Train.",
                          formatter_class=argparse.RawDescriptionHelpFormatter,
                          epilog="example:\n  lipsim train finetune --name lipsim-tiny --preset tiny --dataset "
                                 "synthetic-2afc --dataset-option image_size=64 --epochs 4 --output models/lipsim-tiny")
    _common(p, "finetune")
    p.add_argument("--margin", type=float, action="append",
                   help="hinge margin (default 0.5); repeat for a sweep: one model per margin, NAME-m0.2, …")
    p.set_defaults(func=run)

    p = stages.add_parser("distill", help="distil a metric's embedding (DreamSim by default) into LipSim",
                          description="Distil a teacher metric's embedding into LipSim, on Ray Train.",
                          formatter_class=argparse.RawDescriptionHelpFormatter,
                          epilog="example:\n  lipsim train distill --teacher dreamsim --images /data/imagenet/train "
                                 "--preset small --output models/distilled")
    _common(p, "distill")
    p.add_argument("--teacher", help="registered metric with embed (default dreamsim)")
    p.add_argument("--teacher-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a constructor option of the teacher, repeatable (default: none)")
    p.add_argument("--images", help="image folder (root/<class>/*.jpg, recursive); default: embedded photographs")
    p.add_argument("--image-count", type=int, help="number of embedded-photograph crops (default 2048)")
    p.add_argument("--image-size", type=int, help="training image side (default: the model's input size)")
    p.add_argument("--shard-size", type=int, help="teacher embeddings per cache shard (default 1024)")
    p.set_defaults(func=run)
    return train


_SCALARS = ("name", "preset", "init", "dataset", "split", "val_split", "root", "epochs", "batch_size", "lr",
            "warmup_epochs", "decay", "num_workers", "cpus_per_worker", "use_gpu", "loader_workers", "seed",
            "cache_dir", "output", "teacher", "images", "image_count", "image_size", "shard_size")


def table_from_args(args: argparse.Namespace) -> dict:
    """The ``[[train]]`` table the flags describe (flags left out are absent, so the defaults apply)."""
    table: dict = {"stage": args.stage}
    for key in _SCALARS:
        value = getattr(args, key, None)
        if value is not None:
            table[key] = value
    table.setdefault("name", f"lipsim-{args.stage}")
    if args.betas is not None:
        table["betas"] = list(args.betas)
    for flag, key in (("model_option", "model_options"), ("dataset_option", "dataset_options"),
                      ("val_option", "val_options"), ("teacher_option", "teacher_options")):
        pairs = getattr(args, flag, None) or []
        if pairs:
            table[key] = dict(parse_option(p) for p in pairs)
    margins = getattr(args, "margin", None)
    if margins:
        if len(margins) == 1:
            table["margin"] = margins[0]
        else:
            table["margins"] = margins
    return table


def run(args: argparse.Namespace) -> int:
    """Validate the flags, connect to Ray, train (or resume), print where the models are."""
    from jobs.train.runner import run_all
    from jobs.train.spec import parse_train_tables

    specs = parse_train_tables([table_from_args(args)], Path.cwd())
    started = connect(args.address, args.worker_logs)
    try:
        trained = run_all(specs, progress=not args.no_progress)
    finally:
        if started:
            import ray

            ray.shutdown()
    for label, path in trained.items():
        print(f"{label}: {path}  (metrics.load(\"lipsim\", weights={str(path)!r}))")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.train.cli", description="Train LipSim on Ray Train.")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["train", *(argv if argv is not None else sys.argv[1:])])
    try:
        return args.func(args)
    except SuiteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
