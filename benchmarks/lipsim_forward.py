"""Forward throughput of LipSim ``small`` against the DreamSim ensemble architecture, on this machine.

Measures, at 224×224 with random weights (no downloads):

* LipSim ``small`` as the metric runs it (cached ``T``, channels-last, fused oneDNN kernels, in place);
* the same network through the plain formula (``T`` recomputed per call, NCHW, no fusion),
  with the largest output difference to the fast path;
* the DreamSim ensemble architecture: three ViT-B/16 (DINO, CLIP, OpenCLIP shapes) from
  timm with ``pretrained=False``;
* certified triplets per second (threats ``ref`` and ``all``: three embeddings and the
  certificate arithmetic per triplet).

Usage::

    python benchmarks/lipsim_forward.py [--batch 32] [--repeats 1] [--threads N]

Prints images/s per model (best of ``--repeats`` timed batches after one warm-up batch).
"""

from __future__ import annotations

import argparse
import time

import torch

from metrics.lipsim.metric import LipSimMetric
from metrics.lipsim.model import LipSimNet


def plain_forward(net: LipSimNet, x: torch.Tensor) -> torch.Tensor:
    """The network through each layer's plain formula: NCHW, ``T`` recomputed every call."""
    h = net.pad(x)
    for conv in net.convs:
        h = conv.forward_plain(h)
    for pool in net.pools:
        h = pool(h)
    h = h.flatten(1)
    for layer in net.dense:
        h = layer.forward_plain(h)
    return h[:, : net.config.embed_dim]


def dreamsim_architecture() -> torch.nn.Module:
    """Three ViT-B/16 at 224 (DreamSim's ensemble: DINO, CLIP and OpenCLIP backbones), random weights."""
    import timm

    names = ("vit_base_patch16_224", "vit_base_patch16_clip_224", "vit_base_patch16_clip_224")
    models = [timm.create_model(n, pretrained=False, num_classes=0) for n in names]

    class Ensemble(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.models = torch.nn.ModuleList(models)

        def forward(self, x):
            return torch.cat([m(x) for m in self.models], dim=1)

    return Ensemble().eval().requires_grad_(False)


def rate(label: str, fn, items: int, repeats: int) -> float:
    """Items per second of ``fn()`` (best of ``repeats`` after one warm-up), printed as it goes."""
    print(f"{label}: warm-up ...", flush=True)
    fn()
    best = float("inf")
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
        print(f"{label}: run {i + 1}/{repeats} {time.perf_counter() - start:.2f} s", flush=True)
    return items / best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="images per timed batch (default 32)")
    parser.add_argument("--repeats", type=int, default=1, help="timed batches per model (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--triplets", type=int, default=8, help="triplets per certified batch (default 8)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, 224, 224)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, 224×224", flush=True)

    metric = LipSimMetric(preset="small")
    net = metric.net
    results = {}
    with torch.no_grad():
        results["LipSim small (fast path)"] = rate("lipsim fast", lambda: net(x), args.batch, args.repeats)
        results["LipSim small (plain formula)"] = rate("lipsim plain", lambda: plain_forward(net, x), args.batch, args.repeats)
        n = min(4, args.batch)
        diff = (net(x[:n]) - plain_forward(net, x[:n])).abs().max().item()
        scale = net(x[:n]).abs().max().item()
        dreamsim = dreamsim_architecture()
        results["DreamSim ensemble (3×ViT-B/16)"] = rate("dreamsim", lambda: dreamsim(x), args.batch, args.repeats)

    t = args.triplets
    ref, x0, x1 = (torch.rand(t, 3, 224, 224) for _ in range(3))
    for threat in ("ref", "all"):
        results[f"certified triplets/s, threat {threat}"] = rate(
            f"certify {threat}", lambda: metric.certified_radius(ref, x0, x1, threat), t, args.repeats
        )

    fast, ds = results["LipSim small (fast path)"], results["DreamSim ensemble (3×ViT-B/16)"]
    print()
    for label, value in results.items():
        unit = "" if "triplets" in label else " images/s"
        print(f"{label:40s} {value:8.2f}{unit}")
    print(f"{'fast / plain':40s} {fast / results['LipSim small (plain formula)']:8.2f}×")
    print(f"{'fast / DreamSim':40s} {fast / ds:8.2f}×")
    print(f"{'max |fast − plain| (embedding max ' + f'{scale:.1f})':40s} {diff:8.2e}")


if __name__ == "__main__":
    main()
