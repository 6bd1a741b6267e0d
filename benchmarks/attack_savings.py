"""Gradient evaluations and wall time that early stopping (and an ε ladder) save PGD and MIA, on the demo's setting.

The demo's attack cells: ``synthetic-2afc`` test (image size 64, 96 triplets, batches of
64), the metrics ``l2``, ``ssim`` and a tiny LipSim (random weights, so nothing is
trained or downloaded), PGD and MIA with 10 steps at ℓ2 ε ∈ {0.25, 0.5, 1.0} and
ℓ∞ ε ∈ {1/255, 2/255, 4/255}, threat ``ref``. Each cell runs with ``early_stop`` off
and on; the script prints the per-sample gradient evaluations
(``attack.last_gradient_evaluations``: forward + backward passes, summed over steps),
the wall time, their ratios, and whether the per-sample robust scores are equal
(they must be: a sample leaves only once its score cannot go lower).

``--ladder`` adds the ε ladder of the evaluator's plan: the budgets of one
(metric, attack, norm) are attacked in increasing order, each only on the samples whose
score is not yet the lowest possible, ``min(j, 1 − j)``; the others keep the flipping
point of a smaller budget (still inside the larger ball). With per-sample random
streams a survivor's run is the same as in the direct cell, so a ladder score is never
above the direct one; it is below where the attack flipped a sample at a smaller budget
but not at the larger one.

Usage::

    python benchmarks/attack_savings.py                       # the demo's setting
    python benchmarks/attack_savings.py --ladder --threads 1 --repeats 3
    python benchmarks/attack_savings.py --metrics l2 --attacks pgd --count 32 --threats ref all
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import attacks  # noqa: E402
import metrics  # noqa: E402
from suite import datasets  # noqa: E402
from suite.scoring import oriented, twoafc_score, worst_score  # noqa: E402
from suite.types import Triplets  # noqa: E402

#: the demo's budgets (configs/demo.toml)
BUDGETS = {"l2": (0.25, 0.5, 1.0), "linf": (1 / 255, 2 / 255, 4 / 255)}


@dataclass
class Run:
    """Per-sample scores, gradient evaluations and seconds of one way of running a (metric, attack, norm, ε)."""

    scores: list[torch.Tensor] = field(default_factory=list)
    evaluations: int = 0
    seconds: float = 0.0

    def score(self) -> torch.Tensor:
        return torch.cat(self.scores)


def score(metric, t: Triplets) -> torch.Tensor:
    """Per-sample 2AFC scores, as the evaluator computes them."""
    with torch.no_grad():
        d0, d1 = metric.pair_distances(t.ref, t.x0, t.x1)
    return twoafc_score(*oriented(d0, d1, metric.lower_is_better), t.judge).cpu()


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def direct(metric, batches, name: str, options: dict) -> Run:
    """One attack cell: every batch attacked at one budget."""
    run = Run()
    attack = attacks.load(name, **options)
    for batch in batches:
        adv, seconds = timed(lambda: attack.perturb(metric, batch))
        run.scores.append(score(metric, adv))
        run.evaluations += attack.last_gradient_evaluations
        run.seconds += seconds
    return run


def fastest(make, repeats: int) -> list[Run]:
    """``make()`` (a list of runs) ``repeats`` times in a row, so load spikes hit every run alike;
    each run keeps its fastest time (scores and evaluations are deterministic)."""
    best = make()
    for _ in range(repeats - 1):
        for run, again in zip(best, make()):
            run.seconds = min(run.seconds, again.seconds)
    return best


def ladder(metric, batches, name: str, options: dict, budgets) -> list[Run]:
    """The budgets in increasing order, each attacking only the samples not yet at their lowest score."""
    runs = [Run() for _ in budgets]
    for batch in batches:
        worst = worst_score(batch.judge).cpu()
        current = score(metric, batch)
        for run, eps in zip(runs, budgets):
            survivors = (current > worst).nonzero().flatten()
            attack = attacks.load(name, **options, eps=eps)
            if survivors.numel():
                sub = batch.subset(survivors.to(batch.ref.device))
                adv, seconds = timed(lambda: attack.perturb(metric, sub))
                current[survivors] = torch.minimum(current[survivors], score(metric, adv))
                run.evaluations += attack.last_gradient_evaluations
                run.seconds += seconds
            run.scores.append(current.clone())
    return runs


def ratio(a: float, b: float) -> str:
    return f"{a / b:6.2f}×" if b > 0 else "     ∞"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--metrics", nargs="+", default=["l2", "ssim", "lipsim"],
                   help="registered metric names; lipsim is built with --preset and random weights")
    p.add_argument("--preset", default="tiny", help="LipSim preset (default tiny)")
    p.add_argument("--attacks", nargs="+", default=["pgd", "mia"], choices=["pgd", "mia"])
    p.add_argument("--norms", nargs="+", default=["l2", "linf"], choices=["l2", "linf"])
    p.add_argument("--threats", nargs="+", default=["ref"], choices=["ref", "all"])
    p.add_argument("--steps", type=int, default=10, help="attack steps (the demo's 10)")
    p.add_argument("--seed", type=int, default=0, help="attack seed")
    p.add_argument("--count", type=int, default=96, help="synthetic-2afc test triplets (the demo's 96)")
    p.add_argument("--image-size", type=int, default=64, help="image side (the demo's 64)")
    p.add_argument("--batch", type=int, default=64, help="batch size (the demo's 64)")
    p.add_argument("--ladder", action="store_true", help="also run the ε ladder and print its savings")
    p.add_argument("--repeats", type=int, default=1, help="timed rounds; the fastest of each run is reported")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    dataset = datasets.load("synthetic-2afc", split="test", image_size=args.image_size, count=args.count)
    batches = [b.to(args.device) for b in dataset.batches(args.batch)]
    print(f"synthetic-2afc test: {len(dataset)} triplets at {args.image_size}×{args.image_size}, batches of "
          f"{args.batch}; {args.steps} steps; device {args.device}, threads {torch.get_num_threads()}", flush=True)
    header = (f"{'metric':8} {'attack':6} {'threat':6} {'norm':4} {'eps':>7} | {'grad evals off':>14} {'on':>6} "
              f"{'saved':>7} | {'seconds off':>11} {'on':>7} {'saved':>7} | scores equal")
    print(header)
    print("-" * len(header), flush=True)
    totals = {"off": Run(), "on": Run(), "ladder": Run()}
    ladder_lines, unequal = [], 0
    for metric_name in args.metrics:
        options = {"preset": args.preset} if metric_name == "lipsim" else {}
        metric = metrics.load(metric_name, **options).to(args.device).eval()
        for name in args.attacks:
            for threat in args.threats:
                for norm in args.norms:
                    base = {"norm": norm, "threat": threat, "steps": args.steps, "seed": args.seed}
                    on_runs = []
                    for eps in BUDGETS[norm]:
                        cells = [{**base, "eps": eps, "early_stop": stop} for stop in (False, True)]
                        off, on = fastest(lambda: [direct(metric, batches, name, cell) for cell in cells], args.repeats)
                        on_runs.append(on)
                        differ = int((off.score() != on.score()).sum())
                        unequal += differ
                        for key, run in (("off", off), ("on", on)):
                            totals[key].evaluations += run.evaluations
                            totals[key].seconds += run.seconds
                        print(f"{metric_name:8} {name:6} {threat:6} {norm:4} {eps:7.4f} | {off.evaluations:14d} "
                              f"{on.evaluations:6d} {ratio(off.evaluations, on.evaluations)} | {off.seconds:11.2f} "
                              f"{on.seconds:7.2f} {ratio(off.seconds, on.seconds)} | "
                              f"{'yes' if differ == 0 else f'NO ({differ} samples differ)'}", flush=True)
                    if args.ladder:
                        steps = fastest(lambda: ladder(metric, batches, name, {**base, "early_stop": True},
                                                       BUDGETS[norm]), args.repeats)
                        evals_on = sum(r.evaluations for r in on_runs)
                        evals_ladder = sum(r.evaluations for r in steps)
                        secs_on, secs_ladder = sum(r.seconds for r in on_runs), sum(r.seconds for r in steps)
                        totals["ladder"].evaluations += evals_ladder
                        totals["ladder"].seconds += secs_ladder
                        lower = sum(int((s.score() < o.score()).sum()) for s, o in zip(steps, on_runs))
                        higher = sum(int((s.score() > o.score()).sum()) for s, o in zip(steps, on_runs))
                        ladder_lines.append(
                            f"{metric_name:8} {name:6} {threat:6} {norm:4} | "
                            f"grad evals {evals_on:6d} → {evals_ladder:6d} "
                            f"{ratio(evals_on, evals_ladder)} | seconds {secs_on:7.2f} → {secs_ladder:7.2f} "
                            f"{ratio(secs_on, secs_ladder)} | scores lower {lower}, higher {higher}")
    off, on = totals["off"], totals["on"]
    print("-" * len(header))
    print(f"total: gradient evaluations {off.evaluations} → {on.evaluations} "
          f"({ratio(off.evaluations, on.evaluations)} "
          f"fewer), wall time {off.seconds:.1f} s → {on.seconds:.1f} s ({ratio(off.seconds, on.seconds)}); "
          f"robust scores equal on every sample: {'yes' if unequal == 0 else f'NO ({unequal} sample-cells differ)'}")
    if args.ladder:
        lad = totals["ladder"]
        print("\nε ladder (early stopping on; each budget attacks only the samples that survived the smaller ones)")
        print("per (metric, attack, threat, norm), the three budgets together: direct cells → ladder; "
              "scores lower/higher: sample-budgets where the ladder's score is below/above the direct cell's")
        for line in ladder_lines:
            print(line)
        print(f"total: gradient evaluations {on.evaluations} → {lad.evaluations} "
              f"({ratio(on.evaluations, lad.evaluations)}), vs no early stopping {off.evaluations} → "
              f"{lad.evaluations} ({ratio(off.evaluations, lad.evaluations)}); wall time {on.seconds:.1f} s → "
              f"{lad.seconds:.1f} s ({ratio(on.seconds, lad.seconds)})")


if __name__ == "__main__":
    main()
