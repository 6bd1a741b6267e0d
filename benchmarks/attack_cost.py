"""Attack steps per second of PGD under threat ``ref``: cached candidate embeddings vs recomputing them.

``attacks.pgd`` (through :class:`attacks.objective.TwoAFCObjective`) embeds the clean
candidates once per batch, so a step is one forward and one backward pass of the
reference. The plain implementation below is the same PGD written the obvious way: every
step embeds the reference and both candidates as one batch and back-propagates through
it. Both use the same projection and keep the most damaging point, so the ratio isolates
the caching. For an embedding metric the expected ratio is close to 3.

Usage::

    python benchmarks/attack_cost.py                      # lipsim tiny if registered, else a conv net
    python benchmarks/attack_cost.py --metric conv --batch 16 --size 64 --steps 10
    python benchmarks/attack_cost.py --metric lipsim --preset tiny --device cuda
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import attacks  # noqa: E402
import metrics  # noqa: E402
from attacks.objective import MostDamaging  # noqa: E402
from attacks.threat import project, random_start, sample_generators, steepest_direction  # noqa: E402
from metrics.base import EmbeddingMetric  # noqa: E402
from suite.registry import METRICS  # noqa: E402
from suite.scoring import adversarial_margin  # noqa: E402
from suite.types import Triplets  # noqa: E402


class ConvEmbedding(EmbeddingMetric):
    """A small conv net (≈ a light perceptual backbone) with cosine distance, random weights."""

    def __init__(self, width: int = 32):
        super().__init__()
        layers, c = [], 3
        for out in (width, width, 2 * width, 2 * width, 4 * width):
            layers += [torch.nn.Conv2d(c, out, 3, padding=1), torch.nn.ReLU(), torch.nn.AvgPool2d(2)]
            c = out
        self.net = torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())

    def embed(self, x):
        return self.net(x)

    def compare(self, ex, ey):
        return 1 - torch.nn.functional.cosine_similarity(ex, ey, dim=1)


def plain_pgd(metric, batch: Triplets, *, eps: float, norm: str, steps: int, alpha: float, seed: int) -> Triplets:
    """PGD under threat ``ref`` that embeds ``ref``, ``x0`` and ``x1`` at every step."""
    gens = sample_generators(seed, batch.sample_id)  # the per-sample streams the suite's PGD uses

    def distances(ref):
        e_ref, e0, e1 = metric.embed(torch.cat([ref, batch.x0, batch.x1])).chunk(3)
        return metric.compare(e_ref, e0), metric.compare(e_ref, e1)

    with torch.no_grad():
        best = MostDamaging((batch.ref,), *distances(batch.ref), batch.judge)
    adv = random_start(batch.ref, eps, norm, gens)
    for _ in range(steps):
        adv = adv.detach().requires_grad_()
        d0, d1 = distances(adv)
        (grad,) = torch.autograd.grad(adversarial_margin(d0, d1, batch.judge).sum(), adv)
        best.update((adv,), d0, d1)
        with torch.no_grad():
            adv = project(adv + alpha * steepest_direction(grad, norm), batch.ref, eps, norm)
    with torch.no_grad():
        best.update((adv,), *distances(adv))
    return batch.with_images(best.images[0], batch.x0, batch.x1)


def build_metric(name: str, preset: str):
    if name == "auto":
        name = "lipsim" if "lipsim" in METRICS else "conv"
    if name == "conv":
        return "conv (benchmark-local)", ConvEmbedding()
    return f"{name} (preset {preset})", metrics.load(name, preset=preset)


def best_times(fns, repeats: int) -> list[float]:
    """Fastest wall time of each function over ``repeats`` rounds, run alternately so load spikes hit both."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, acc in zip(fns, times):
            start = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            acc.append(time.perf_counter() - start)
    return [min(t) for t in times]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--metric", default="auto", help="auto | conv | lipsim | any registered embedding metric")
    p.add_argument("--preset", default="tiny", help="preset passed to metrics.load for registered metrics")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=None, help="image side; default the metric's input size, else 64")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--norm", default="l2", choices=["l2", "linf"])
    p.add_argument("--eps", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (alternating); the fastest of each is reported")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    label, metric = build_metric(args.metric, args.preset)
    if not metric.has_embed:
        raise SystemExit(f"metric {label} has no embed(): nothing is cached, the comparison is moot")
    metric = metric.to(args.device).eval()
    size = args.size or metric.input_size or 64
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(args.batch, 3, size, size, generator=g)
    x0 = (ref + 0.1 * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    x1 = (ref + 0.1 * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    judge = torch.rand(args.batch, generator=g)
    batch = Triplets(ref, x0, x1, judge, [str(i) for i in range(args.batch)]).to(args.device)

    # early stopping off: the plain loop steps every sample every time, so both do the same work
    attack = attacks.load("pgd", norm=args.norm, eps=args.eps, steps=args.steps, early_stop=False)

    def ours():
        return attack.perturb(metric, batch)

    def plain():
        return plain_pgd(metric, batch, eps=args.eps, norm=args.norm, steps=args.steps,
                         alpha=attack.step_size, seed=attack.seed)

    same = torch.allclose(ours().ref, plain().ref, atol=1e-4)  # also the warm-up
    t_ours, t_plain = best_times([ours, plain], args.repeats)
    print(f"metric {label}, device {args.device}, batch {args.batch}×3×{size}×{size}, "
          f"{args.steps} steps, {args.norm} ε={args.eps}, threads {torch.get_num_threads()}")
    print(f"  pgd (cached candidates): {args.steps / t_ours:8.2f} steps/s  ({t_ours:.3f} s per batch)")
    print(f"  plain (re-embed all 3):  {args.steps / t_plain:8.2f} steps/s  ({t_plain:.3f} s per batch)")
    print(f"  speed-up: {t_plain / t_ours:.2f}×   same adversarial references: {same}")


if __name__ == "__main__":
    main()
