"""Certified 2AFC score and cost: LipSim's Lipschitz certificate against randomized smoothing (RS).

On the same triplets (``synthetic-2afc`` test split, 64×64, ``--count`` of them):

- ``lipsim`` (preset ``tiny``, random weights, or trained ones with ``--weights DIR``)
  certified by its Lipschitz radius (``metric.certified_radius``: one embedding of each
  image, timed alone);
- ``lipsim``, ``l2`` and ``ssim`` certified by RS (:func:`suite.smoothed.certify_smoothed`,
  CERTIFY of Cohen et al. with ``--n0``/``--n``/``--alpha``) at each ``--sigmas``;
- ``l2`` by its exact bisector radius (threat ``ref``), as a reference for what RS recovers.

For each: the natural score (the smoothed decision's for RS, abstentions scoring
``min(j, 1 − j)``), the certified score at ε ∈ {36, 72, 108}/255 and {0.25, 0.5, 1.0}
(per-image ℓ2, threat ``--threat``), the abstention rate, images processed ("forwards")
and seconds per certified triplet, and the cost relative to LipSim's Lipschitz certificate
(``×Lip``). A non-embedding metric (``ssim``) compares each noisy reference with both
candidates, so its "forwards" (noisy images) understate its work.
Cohen et al. use ``n = 100,000``; a small ``--n`` gives smaller radii (the
Clopper–Pearson bound is looser) and proportionally lower cost.

Usage::

    python benchmarks/certify_cost.py --n 200 --n0 20
    python benchmarks/certify_cost.py --weights runs/tiny --n 10000 --device cuda
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import metrics  # noqa: E402
from suite import datasets  # noqa: E402
from suite.scoring import certified_score, oriented, twoafc_score  # noqa: E402
from suite.smoothed import certify_smoothed  # noqa: E402
from suite.smoothing import ABSTAIN  # noqa: E402

BUDGETS = (36 / 255, 0.25, 72 / 255, 108 / 255, 0.5, 1.0)
LABELS = ("36/255", "0.25", "72/255", "108/255", "0.5", "1.0")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def lipschitz_row(name: str, metric, batch, device: str, threat: str) -> dict:
    """Certified scores from the metric's own radius; seconds and forwards of ``certified_radius`` alone."""
    with torch.no_grad():
        metric.certified_radius(batch.ref[:1], batch.x0[:1], batch.x1[:1], threat=threat)  # warm-up
        _sync(device)
        start = time.perf_counter()
        radius = metric.certified_radius(batch.ref, batch.x0, batch.x1, threat=threat).cpu()
        _sync(device)
        seconds = time.perf_counter() - start
        d0, d1 = metric.pair_distances(batch.ref, batch.x0, batch.x1)
    judge = batch.judge.cpu()
    natural = twoafc_score(*oriented(d0.cpu(), d1.cpu(), metric.lower_is_better), judge)
    return {"method": name, "sigma": "-", "natural": float(natural.mean()),
            "certified": [float(certified_score(natural, radius, judge, e).mean()) for e in BUDGETS],
            "abstain": 0.0, "forwards": 3.0, "seconds": seconds / len(batch), "radius": radius}


def smoothing_row(name: str, metric, batch, sigma: float, args) -> dict:
    """Certified scores of the smoothed decision (CERTIFY), with a progress bar over noisy copies."""
    from tqdm import tqdm

    with torch.no_grad():
        metric.pair_distances(batch.ref[:1], batch.x0[:1], batch.x1[:1])  # warm-up
    with tqdm(total=len(batch) * (args.n0 + args.n), desc=f"{name} σ={sigma:g}", unit="copy",
              file=sys.stderr, leave=False, disable=args.quiet) as bar:
        out = certify_smoothed(metric, batch, threat=args.threat, sigma=sigma, n0=args.n0, n=args.n,
                               alpha=args.alpha, seed=args.seed, chunk=args.chunk,
                               progress=lambda done, total: bar.update(done - bar.n))
    judge = batch.judge.cpu()
    return {"method": name, "sigma": f"{sigma:g}", "natural": float(out.score(judge).mean()),
            "certified": [float(out.certified_score(judge, e).mean()) for e in BUDGETS],
            "abstain": float((out.decision == ABSTAIN).double().mean()),
            "forwards": float(out.forwards.double().mean()), "seconds": float(out.seconds.mean()),
            "radius": out.radius}


def print_table(rows: list[dict], reference: dict) -> None:
    head = (f"{'method':<22}{'σ':>6}{'natural':>9}" + "".join(f"{label:>9}" for label in LABELS)
            + f"{'abstain':>9}{'fwd/trip':>10}{'s/trip':>10}{'×Lip(s)':>10}{'×Lip(fwd)':>10}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['method']:<22}{r['sigma']:>6}{r['natural']:>9.3f}" + "".join(f"{v:>9.3f}" for v in r["certified"])
              + f"{r['abstain']:>9.2f}{r['forwards']:>10.0f}{r['seconds']:>10.4f}"
              + f"{r['seconds'] / reference['seconds']:>10.1f}{r['forwards'] / reference['forwards']:>10.1f}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000, help="RS estimation samples per triplet (paper: 100,000)")
    p.add_argument("--n0", type=int, default=100, help="RS selection samples per triplet (paper: 100)")
    p.add_argument("--alpha", type=float, default=0.001, help="RS failure probability per certificate")
    p.add_argument("--count", type=int, default=48, help="triplets of the synthetic-2afc test split")
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.12, 0.25, 0.5])
    p.add_argument("--threat", default="ref", choices=["ref", "all"], help="threat of every certificate")
    p.add_argument("--weights", default=None, help="trained LipSim checkpoint directory (default: random tiny)")
    p.add_argument("--metrics", nargs="+", default=["lipsim", "l2", "ssim"], help="metrics certified by RS")
    p.add_argument("--chunk", type=int, default=256, help="noisy copies per forward call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    data = datasets.load("synthetic-2afc", split="test", image_size=64, count=args.count)
    batch = next(data.batches(len(data))).to(args.device)
    lipsim = (metrics.load("lipsim", weights=args.weights) if args.weights
              else metrics.load("lipsim", preset="tiny")).to(args.device)
    built = {"lipsim": lipsim}
    for name in args.metrics:
        built.setdefault(name, metrics.load(name).to(args.device))

    weights = args.weights or "random tiny"
    print(f"synthetic-2afc test, {len(batch)} triplets 64×64, device {args.device}, threads "
          f"{torch.get_num_threads()}; lipsim: {weights}; RS: threat {args.threat}, n0={args.n0}, n={args.n}, "
          f"alpha={args.alpha:g}; certified score at per-image ℓ2 ε")
    reference = lipschitz_row("lipsim Lipschitz", lipsim, batch, args.device, args.threat)
    rows = [reference]
    if "l2" in args.metrics and args.threat == "ref":
        rows.append(lipschitz_row("l2 exact (bisector)", built["l2"], batch, args.device, "ref"))
    for name in args.metrics:
        for sigma in args.sigmas:
            rows.append(smoothing_row(f"{name} RS", built[name], batch, sigma, args))
    print_table(rows, reference)
    radius = reference["radius"]
    print(f"lipsim Lipschitz radius: median {float(radius.median()):.4f}, max {float(radius.max()):.4f}")
    for r in rows[1:]:
        print(f"{r['method']:<22} σ={r['sigma']:>5}: radius median {float(r['radius'].median()):.4f}, "
              f"max {float(r['radius'].max()):.4f}")


if __name__ == "__main__":
    main()
