"""Wall time of a fixed grid on 1 and 2 Ray workers, the same cells in process, and the cost of a shard.

The grid: LipSim (preset ``tiny``, random weights) and SSIM on 64 synthetic 2AFC triplets
at 64×64: natural, certified (LipSim only) and a PGD ℓ2 ladder (2 budgets, 10 steps),
batches of 16, shards of 32 samples. It runs

- in process: every cell through :func:`jobs.tasks.run_cell`, one torch thread (a worker's
  share at ``cpus_per_cell = 1``), metrics built once;
- on a local Ray cluster (started once, not timed) with ``max_in_flight`` 1 and 2: the whole
  ``run()`` (validation, actors loading their metric, shards, merge, worst case, invariants,
  leaderboard), each time into a fresh results folder;

and prints each wall time, the ratios, how long each worker took to load its metric, and how long each
actor took from being asked for to ready (a new process: Python, torch and the suite imported, then the load).
Then the shard sweep: one natural cell of 512 triplets (L2, 32×32) with shard sizes 16, 64,
256 and 512 on one worker; the extra time per extra shard is the fixed cost of a shard
(an actor call, the rows back to the driver, one shard file written and read).

Usage::

    python benchmarks/grid_scaling.py
    python benchmarks/grid_scaling.py --count 128 --steps 20
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import torch  # noqa: E402

from jobs.benchmark import expand, run  # noqa: E402
from jobs.cluster import start_local  # noqa: E402
from jobs.shards import spans  # noqa: E402
from jobs.tasks import build_metric, run_cell  # noqa: E402
from suite.config import parse_config  # noqa: E402


def grid(results: Path, count: int, steps: int, workers: int) -> dict:
    return {
        "run": {"name": "scaling", "results": str(results), "batch_size": 16, "shard_size": 32,
                "max_in_flight": workers},
        "metrics": [{"name": "lipsim", "options": {"preset": "tiny"}}, {"name": "ssim"}],
        "datasets": [{"name": "synthetic-2afc", "splits": ["test"], "options": {"image_size": 64, "count": count}}],
        "evaluations": [{"kind": "natural"}, {"kind": "certified", "eps": [0.5]},
                        {"kind": "attack", "attack": "pgd", "eps": {"l2": [0.25, 1.0]}, "options": {"steps": steps}}],
    }


def in_process(config) -> tuple[int, float, float]:
    """``(cells, seconds for every cell, seconds to build the metrics)`` with one torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        for spec in config.metrics:  # the first build in this process: what a worker pays once
            build_metric(spec.name, spec.options)
        loaded = time.perf_counter()
        cells = expand(config)[0]
        for cell in cells:
            run_cell(cell, device="cpu")
        return len(cells), time.perf_counter() - loaded, loaded - start
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=64, help="triplets of the grid's dataset")
    parser.add_argument("--steps", type=int, default=10, help="PGD steps")
    parser.add_argument("--sweep-count", type=int, default=512, help="triplets of the shard sweep's cell")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="grid-scaling-"))
    os.environ.setdefault("LIPSIM_SUITE_CACHE", str(scratch / "cache"))

    cells, seconds, load = in_process(parse_config(grid(scratch / "in-process", args.count, args.steps, 1)))
    print(f"grid: {cells} cells, {args.count} triplets, 64×64, shards of 32 "
          f"({len(spans(args.count, 32, 16))} per cell), PGD {args.steps} steps; {os.cpu_count()} CPUs")
    print(f"in process (1 thread):   {seconds:7.1f} s   (+ {load:.2f} s building the metrics)")

    start_local(num_cpus=2)
    walls = {}
    for workers in (1, 2):
        config = parse_config(grid(scratch / f"workers-{workers}", args.count, args.steps, workers))
        summary = run(config, progress=False)
        assert summary.ok, (summary.failed, summary.violations)
        walls[workers] = summary.seconds
        loads = ", ".join(f"{w['metric']} {w['load_seconds']:.2f} s" for w in summary.workers)
        ready = ", ".join(f"{w['ready_seconds']:.1f} s" for w in summary.workers)
        print(f"Ray, {workers} worker{'s' if workers > 1 else ' '}:          {summary.seconds:7.1f} s   "
              f"(metric load per worker: {loads}; asked for → ready, a new process importing torch included: "
              f"{ready})")
    print(f"ratios: 1 worker / in process = {walls[1] / seconds:.2f}; 2 workers / 1 worker = {walls[2] / walls[1]:.2f}")

    print(f"shard sweep: one natural cell, L2, {args.sweep_count} triplets at 32×32, batches of 16, 1 worker")
    times = {}
    for size in (16, 64, 256, 512):
        config = parse_config({
            "run": {"name": "sweep", "results": str(scratch / f"sweep-{size}"), "batch_size": 16, "shard_size": size,
                    "max_in_flight": 1, "worst_case": False, "check_invariant": False},
            "metrics": [{"name": "l2"}],
            "datasets": [{"name": "synthetic-2afc", "splits": ["test"],
                          "options": {"image_size": 32, "count": args.sweep_count}}],
            "evaluations": [{"kind": "natural"}]})
        n = len(spans(args.sweep_count, size, 16))
        times[n] = run(config, progress=False).seconds
        print(f"  shard_size {size:4d}: {n:3d} shards  {times[n]:6.2f} s")
    most, fewest = max(times), min(times)
    print(f"fixed cost of a shard ≈ {(times[most] - times[fewest]) / (most - fewest) * 1000:.0f} ms")

    import ray

    ray.shutdown()


if __name__ == "__main__":
    main()
