"""Images per second of each metric at 224×224 on the CPU: forward, and forward + backward.

What is timed is the step an attack repeats: ``metric.distance_to(x, r)`` for a batch of
``--batch`` images ``x`` against candidates already reduced by ``r = metric.represent(y)``
(for an embedding metric: one embedding per image of ``x``), under ``torch.no_grad()``
("forward"), and the same with ``.sum().backward()`` to ``x`` ("forward + backward").
Every network has random weights (``pretrained=False``; LipSim ``small`` without
weights is random), so nothing is read or downloaded; the speed does not depend on the
weights. LipSim ``small`` and the DreamSim ensemble run in the same process, one after
the other, so their ratio is measured under the same load.

Usage::

    python benchmarks/metric_speed.py [--metrics lipsim-small,dreamsim,...] [--batch 8] [--repeats 3]
                                      [--threads N]

Prints images/s per metric (best of ``--repeats`` timed calls after one warm-up call) and
the ratio to LipSim ``small``. Metrics whose module is not installed in this checkout
(``metrics.lpips``, ``metrics.dists``, ...) are listed as skipped.
"""

from __future__ import annotations

import argparse
import importlib
import time

import torch

#: benchmark name → (module that registers it, registered name, options)
METRICS = {
    "lipsim-small": ("metrics.lipsim", "lipsim", {"preset": "small"}),
    "dreamsim": ("metrics.dreamsim", "dreamsim", {"pretrained": False}),
    "dreamsim-dino": ("metrics.dreamsim", "dreamsim", {"branch": "dino", "pretrained": False}),
    "dreamsim-clip": ("metrics.dreamsim", "dreamsim", {"branch": "clip", "pretrained": False}),
    "dino": ("metrics.dino", "dino", {"pretrained": False}),
    "clip": ("metrics.clip", "clip", {"arch": "ViT-B-32", "pretrained": False}),
    "clip-vit-b-16": ("metrics.clip", "clip", {"arch": "ViT-B-16", "pretrained": False}),
    "r-clip-vit-b-16": ("metrics.clip", "r-clip", {"variant": "vit-b-16-tecoa", "pretrained": False}),
    "r-clip-convnext": ("metrics.clip", "r-clip", {"variant": "convnext_base_w-tecoa", "pretrained": False}),
    "lpips": ("metrics.lpips", "lpips", {"net": "alex", "pretrained": False}),
    "lpips-vgg": ("metrics.lpips", "lpips", {"net": "vgg", "pretrained": False}),
    "dists": ("metrics.dists", "dists", {"pretrained": False}),
    "l2": ("metrics.classic", "l2", {}),
    "ssim": ("metrics.classic", "ssim", {}),
}
DEFAULT = ("lipsim-small", "dreamsim", "dino", "clip", "r-clip-convnext", "lpips", "dists", "ssim")


def best_time(fn, repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``fn()``, after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(metric, x: torch.Tensor, y: torch.Tensor, repeats: int) -> tuple[float, float]:
    """``(forward, forward + backward)`` images/s of ``distance_to(x, represent(y))``."""
    with torch.no_grad():
        r = metric.represent(y)

    def forward():
        with torch.no_grad():
            metric.distance_to(x, r)

    def backward():
        z = x.detach().requires_grad_(True)
        metric.distance_to(z, r).sum().backward()

    n = x.shape[0]
    fwd = n / best_time(forward, repeats)
    bwd = n / best_time(backward, repeats) if getattr(metric, "differentiable", True) else float("nan")
    return fwd, bwd


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", default=",".join(DEFAULT),
                        help=f"comma-separated, from: {', '.join(METRICS)} (default: {','.join(DEFAULT)})")
    parser.add_argument("--batch", type=int, default=8, help="images per timed call (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.metrics.split(",") if n.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        parser.error(f"unknown metrics {unknown}; choose from {', '.join(METRICS)}")
    if "lipsim-small" in names and "dreamsim" in names:  # measured back to back for the ratio
        names.remove("dreamsim")
        names.insert(names.index("lipsim-small") + 1, "dreamsim")
    if args.threads:
        torch.set_num_threads(args.threads)

    import metrics

    torch.manual_seed(0)
    x, y = torch.rand(args.batch, 3, 224, 224), torch.rand(args.batch, 3, 224, 224)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, 224×224, "
          f"best of {args.repeats}, random weights", flush=True)
    rows = []
    for name in names:
        module, registered, options = METRICS[name]
        try:
            importlib.import_module(module)
        except ImportError as err:
            print(f"{name}: skipped ({module} not available: {err})", flush=True)
            continue
        start = time.perf_counter()
        metric = metrics.load(registered, **options)
        built = time.perf_counter() - start
        params = sum(p.numel() for p in metric.parameters()) / 1e6
        fwd, bwd = measure(metric, x, y, args.repeats)
        rows.append((name, params, fwd, bwd))
        print(f"{name}: built in {built:.1f} s, {params:.1f} M parameters, {fwd:.2f} img/s forward, "
              f"{bwd:.2f} img/s forward+backward", flush=True)
        del metric

    base = next((r for r in rows if r[0] == "lipsim-small"), None)
    print()
    print(f"{'metric':18s} {'params (M)':>10s} {'fwd img/s':>10s} {'fwd+bwd img/s':>14s}"
          + (f" {'fwd vs lipsim':>14s} {'f+b vs lipsim':>14s}" if base else ""))
    for name, params, fwd, bwd in rows:
        line = f"{name:18s} {params:10.1f} {fwd:10.2f} {bwd:14.2f}"
        if base:
            line += f" {fwd / base[2]:13.3f}× {bwd / base[3]:13.3f}×"
        print(line)


if __name__ == "__main__":
    main()
