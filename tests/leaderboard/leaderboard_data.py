"""Hand-made result rows and sidecar specs for the leaderboard tests (known scores, no metric is run)."""

from __future__ import annotations

import polars as pl

from suite.schema import ROW_SCHEMA
from suite.store import ResultStore, cell_key

EPS_INF = 8 / 255
EPS_L2 = 36 / 255


def rows_for(metric: str, kind: str, scores: list[float | None], *, attack: str = "", threat: str = "",
             norm: str = "", eps: float = 0.0, d0=None, d1=None, radius=None, reached=None, bound=None,
             cell: str = "c", metric_id: str = "w0", dataset: str = "nights", split: str = "test",
             ids: list[str] | None = None) -> list[dict]:
    n = len(scores)
    d0 = d0 or [0.1] * n
    d1 = d1 or [0.2] * n
    radius = radius or [None] * n
    reached = reached or [None] * n
    bound = bound or [None] * n
    ids = ids or [f"s{i}" for i in range(n)]
    return [
        {"metric": metric, "metric_id": metric_id, "dataset": dataset, "split": split, "kind": kind,
         "attack": attack, "threat": threat, "norm": norm, "eps": eps, "sample_id": ids[i], "judge": 0.5,
         "d0": d0[i], "d1": d1[i], "score": scores[i], "radius": radius[i],
         "reached": reached[i], "bound": bound[i], "seconds": 0.25,
         "suite_version": "0.1.0", "cell": cell}
        for i in range(n)
    ]


def frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=ROW_SCHEMA)


def one(agg: pl.DataFrame, **where) -> dict:
    hits = agg.filter(*(pl.col(k) == v for k, v in where.items()))
    assert hits.height == 1, hits
    return hits.row(0, named=True)


def spec(metric: str, kind: str, *, attack: str = "", attack_name: str = "", attack_options: dict | None = None,
         threat: str = "", norm: str = "", budgets=(0.0,), metric_id: str = "w0", dataset: str = "nights",
         split: str = "test", dataset_fp: str = "fp0", metric_options: dict | None = None, seed: int = 0,
         metric_name: str = "") -> dict:
    """A sidecar spec shaped like ``Cell.spec()``."""
    return {"metric": metric, "metric_name": metric_name or metric, "metric_options": metric_options or {},
            "metric_id": metric_id, "dataset": dataset, "dataset_options": {"count": 4}, "split": split, "limit": None,
            "dataset_fp": dataset_fp, "kind": kind, "attack": attack, "attack_name": attack_name or attack,
            "attack_options": attack_options or {}, "threat": threat, "norm": norm, "budgets": list(budgets),
            "seed": seed, "batch_size": 32, "suite_version": "0.1.0"}


def write(store: ResultStore, cell_spec: dict, scores: list[float | None], **row_options) -> str:
    """Store one cell of ``scores`` under the key of ``cell_spec``; returns the key."""
    key = cell_key(cell_spec)
    s = cell_spec
    rows = rows_for(s["metric"], s["kind"], scores, attack=s.get("attack", ""), threat=s.get("threat", ""),
                    norm=s.get("norm", ""), eps=(s.get("budgets") or [0.0])[0], metric_id=s.get("metric_id", "w0"),
                    dataset=s.get("dataset", "nights"), split=s.get("split", "test"), cell=key, **row_options)
    store.write(key, cell_spec, rows)
    return key


def fill_store(root) -> ResultStore:
    """Two metrics (one with a hostile label), natural + pgd + worst + certified cells, one failed cell."""
    store = ResultStore(root)
    settings = [
        ("natural", "", "", "", 0.0, None),
        ("attack", "pgd", "ref", "linf", EPS_INF, None),
        ("worst", "", "ref", "linf", EPS_INF, None),
        ("certified", "", "ref", "l2", EPS_L2, [0.2, 0.3]),
    ]
    scores = {"lipsim": [1.0, 0.5], "<b>evil & co</b>": [1.0, 1.0]}
    robust = {"lipsim": [1.0, 0.5], "<b>evil & co</b>": [0.0, 0.0]}
    for metric in scores:
        for kind, attack, threat, norm, eps, radius in settings:
            cell_spec = {"metric": metric, "kind": kind, "attack": attack, "threat": threat, "norm": norm, "eps": eps}
            key = cell_key(cell_spec)
            values = scores[metric] if kind == "natural" else robust[metric]
            store.write(key, cell_spec, rows_for(metric, kind, values, attack=attack, threat=threat, norm=norm,
                                                 eps=eps, radius=radius, cell=key))
    bad = {"metric": "dreamsim", "kind": "attack"}
    store.write_failure(cell_key(bad), bad, "RuntimeError: <CUDA> out of memory & more")
    return store


HOSTILE = '<script>alert("label")</script>'


def showcase_store(root, *, samples: int = 40, weights_dir=None) -> ResultStore:
    """A small but complete store on synthetic-2afc: four metrics (one labelled with a script tag),
    natural, two attacks as ε ladders in ℓ2 and ℓ∞ under threat ref, their worst cases, certified
    scores, the distance attack (one sample above its bound by round-off only), a failed cell and a
    not-evaluated metric whose texts are hostile. Scores are seeded, per sample monotone in ε."""
    import random

    store = ResultStore(root)
    rng = random.Random(0)
    budgets = {"l2": [0.25, 0.5, 1.0], "linf": [1 / 255, 2 / 255, 4 / 255]}
    metrics = {"lipsim-tiny": 0.9, "l2": 0.5, "ssim": 0.3, HOSTILE: 0.1}
    ids = [f"t{i:03d}" for i in range(samples)]
    for metric, robustness in metrics.items():
        options = {"weights": str(weights_dir)} if metric == "lipsim-tiny" and weights_dir else {}
        base = dict(metric_id=f"id-{len(metric)}", dataset="synthetic-2afc", metric_options=options,
                    metric_name="lipsim" if metric == "lipsim-tiny" else "l2")
        judge = [rng.choice([0.2, 0.4, 0.6, 0.8]) for _ in ids]
        natural = [max(j, 1 - j) if rng.random() < 0.88 else min(j, 1 - j) for j in judge]
        floor = [min(j, 1 - j) for j in judge]
        hardness = [rng.random() * robustness for _ in ids]
        write(store, spec(metric, "natural", **base), natural, ids=ids)
        for norm, eps_list in budgets.items():
            scale = eps_list[-1]
            members = []
            for attack, options_, strength in (("pgd", {"steps": 10}, 0.9), ("autoattack", {"n_iter": 5}, 1.0)):
                cell = spec(metric, "attack", attack=attack, attack_options=options_, threat="ref", norm=norm,
                            budgets=eps_list, **base)
                key = cell_key(cell)
                rows = []
                for eps in eps_list:
                    scores = [f if hardness[i] * scale > eps * strength * 0.8 else floor[i]
                              for i, f in enumerate(natural)]
                    rows += rows_for(metric, "attack", scores, attack=attack, threat="ref", norm=norm, eps=eps,
                                     metric_id=base["metric_id"], dataset="synthetic-2afc", cell=key, ids=ids)
                store.write(key, cell, rows)
                members.append((key, rows))
            worst_spec = {"kind": "worst", "members": sorted(k for k, _ in members)}
            wkey = cell_key(worst_spec)
            wrows = []
            for eps in eps_list:
                at = [[r for r in rows if r["eps"] == eps] for _, rows in members]
                scores = [min(a[i]["score"] for a in at) for i in range(samples)]
                wrows += rows_for(metric, "worst", scores, attack="autoattack+pgd", threat="ref", norm=norm, eps=eps,
                                  metric_id=base["metric_id"], dataset="synthetic-2afc", cell=wkey, ids=ids)
            store.write(wkey, worst_spec, wrows)
        if metric in ("lipsim-tiny", "l2"):
            cell = spec(metric, "certified", threat="ref", norm="l2", budgets=budgets["l2"], **base)
            key = cell_key(cell)
            radius = [hardness[i] * 0.8 for i in range(samples)]
            rows = []
            for eps in budgets["l2"]:
                scores = [f if radius[i] > eps else floor[i] for i, f in enumerate(natural)]
                rows += rows_for(metric, "certified", scores, threat="ref", norm="l2", eps=eps, radius=radius,
                                 metric_id=base["metric_id"], dataset="synthetic-2afc", cell=key, ids=ids)
            store.write(key, cell, rows)
        for eps in budgets["l2"]:
            reached = [eps * 0.5 * (1 + rng.random()) for _ in ids]
            bound = [eps] * samples if metric != "ssim" else [None] * samples
            if metric == "l2":
                reached = [eps] * samples
                reached[0] = eps + 2e-7  # float round-off above the bound: tolerated, not "over the bound"
            write(store, spec(metric, "distance", attack="distance", attack_options={"steps": 10}, threat="ref",
                              norm="l2", budgets=[eps], **base), [None] * samples, ids=ids, reached=reached,
                  bound=bound)
    bad = spec("dreamsim", "attack", attack="pgd", threat="ref", norm="l2", budgets=[0.5])
    store.write_failure(cell_key(bad), bad, "RuntimeError: <img src=x onerror=alert('error')> went wrong")
    missing = {"kind": "not-evaluated", "metric": "clip", "metric_name": "clip", "metric_options": {}}
    store.write_not_evaluated(cell_key(missing), missing, "weights not found: <img src=y onerror=alert('reason')>")
    return store


def training_folder(root):
    """A folder shaped like what ``lipsim train`` writes next to its weights."""
    import json

    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"name": "tiny", "embed_dim": 128, "input_size": 64}))
    (root / "spec.json").write_text(json.dumps({"recipe": {"stage": "finetune", "dataset": "synthetic-2afc",
                                                           "epochs": 2, "lr": 0.001, "margin": 0.5},
                                                "recipe_hash": "abc123"}))
    (root / "metrics.jsonl").write_text('{"epoch": 1, "loss": 0.5, "val_score": 0.8}\n'
                                        '{"epoch": 2, "loss": 0.4, "val_score": 0.85}\n')
    return root


# copy detection (retrieval rows: one per query, task "retrieval"; suite/schema.py)

COPY_EPS = 0.5


def retrieval_rows(metric: str, kind: str, scores: list[float], *, ap=None, d0=None, d1=None, radius=None,
                   attack: str = "", threat: str = "", norm: str = "", eps: float = 0.0, cell: str = "r",
                   metric_id: str = "w0", dataset: str = "copydays", split: str = "strong",
                   ids: list[str] | None = None) -> list[dict]:
    """Retrieval rows shaped like :mod:`suite.evaluate_retrieval`'s: ``judge`` null, ``task`` ``retrieval``."""
    n = len(scores)
    rows = rows_for(metric, kind, scores, attack=attack, threat=threat, norm=norm, eps=eps, d0=d0, d1=d1,
                    radius=radius, cell=cell, metric_id=metric_id, dataset=dataset, split=split,
                    ids=ids or [f"q{i}" for i in range(n)])
    for row, value in zip(rows, ap or [None] * n):
        row.update(judge=None, task="retrieval", ap=value, passes=None)
    return rows


def write_retrieval(store: ResultStore, cell_spec: dict, rows_by_eps: list[tuple[float, dict]], *,
                    like: dict | None = None) -> str:
    """Store one retrieval cell: ``rows_by_eps`` lists ``(eps, options of retrieval_rows)``; the rows' columns
    come from ``like`` (a worst cell: its member's spec, with kind ``worst``) or else ``cell_spec``; returns
    the cell's key."""
    key = cell_key(cell_spec)
    s = like or cell_spec
    rows = []
    for eps, options in rows_by_eps:
        rows += retrieval_rows(s["metric"], s["kind"], attack=s.get("attack", ""), threat=s.get("threat", ""),
                               norm=s.get("norm", ""), eps=eps, metric_id=s.get("metric_id", "w0"),
                               dataset=s.get("dataset", "copydays"), split=s.get("split", "strong"), cell=key,
                               **options)
    store.write(key, cell_spec, rows)
    return key


def add_retrieval(store: ResultStore) -> ResultStore:
    """Copy-detection cells on copydays/strong (4 queries) for two metrics, values chosen by hand:

    - ``lipsim``: natural recall@1 3/4, AP 1, 1, 0.5, 0.25 (mAP 0.6875), every query with a match
      (micro-AP 0.75); evasion ℓ2 0.5: attack rows 2/4, worst rows 1/4; collision ℓ2 0.5: 3/4
      resisted; certified ℓ2 at 0 (3/4) and 0.5 (1/4);
    - ``dino``: natural recall@1 1/4, AP 1, 0.5, –, 0.2 (q2 has no true match: mAP 1.7/3,
      micro-AP 1/3); evasion ℓ2 0.5: attack rows only, 0/4; no certificate.
    """
    base = dict(dataset="copydays", split="strong", dataset_fp="fp-copy")
    lip = dict(metric_id="w-lip", metric_name="lipsim", **base)
    write_retrieval(store, spec("lipsim", "natural", **lip), [(0.0, dict(
        scores=[1.0, 1.0, 1.0, 0.0], ap=[1.0, 1.0, 0.5, 0.25], d0=[0.1, 0.2, 0.3, 0.5], d1=[0.4, 0.5, 0.6, 0.45]))])
    attack = spec("lipsim", "attack", attack="evasion", threat="query", norm="l2", budgets=[COPY_EPS], **lip)
    akey = write_retrieval(store, attack, [(COPY_EPS, dict(scores=[1.0, 1.0, 0.0, 0.0], ap=[1.0, 0.5, 0.2, 0.1]))])
    write_retrieval(store, {"kind": "worst", "members": [akey]}, [(COPY_EPS, dict(scores=[1.0, 0.0, 0.0, 0.0]))],
                    like={**attack, "kind": "worst"})
    write_retrieval(store, spec("lipsim", "attack", attack="collision", threat="collision", norm="l2",
                                budgets=[COPY_EPS], **lip),
                    [(COPY_EPS, dict(scores=[1.0, 1.0, 0.0, 1.0], ids=["q0>g7", "q1>g3", "q2>g9", "q3>g1"]))])
    write_retrieval(store, spec("lipsim", "certified", threat="query", norm="l2", budgets=[0.0, COPY_EPS], **lip),
                    [(0.0, dict(scores=[1.0, 1.0, 1.0, 0.0], radius=[0.9, 0.3, 0.2, 0.0])),
                     (COPY_EPS, dict(scores=[1.0, 0.0, 0.0, 0.0], radius=[0.9, 0.3, 0.2, 0.0]))])
    dino = dict(metric_id="w-dino", metric_name="dino", **base)
    write_retrieval(store, spec("dino", "natural", **dino), [(0.0, dict(
        scores=[1.0, 0.0, 0.0, 0.0], ap=[1.0, 0.5, None, 0.2], d0=[0.2, 0.4, None, 0.5],
        d1=[0.3, 0.35, 0.3, 0.45]))])
    write_retrieval(store, spec("dino", "attack", attack="evasion", threat="query", norm="l2", budgets=[COPY_EPS],
                                **dino), [(COPY_EPS, dict(scores=[0.0, 0.0, 0.0, 0.0]))])
    return store
