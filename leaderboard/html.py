"""The leaderboard as one static, self-contained HTML page (inline CSS, no script, no CDN).

:func:`render` is a pure function of the aggregated entries (leaderboard/aggregate.py)
and the store's failed cells: the page shows what the store holds, nothing more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape

import polars as pl

from leaderboard.aggregate import fmt_eps, fmt_norm

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 80em;
       padding: 0 1em; color: #1d1d1f; }
h1 { font-size: 1.6em; margin-bottom: .1em; } h2 { margin-top: 2em; font-size: 1.25em; }
.meta, .note { color: #555; } .note { max-width: 60em; }
table { border-collapse: collapse; margin: .8em 0; }
th, td { border: 1px solid #d6d6d6; padding: .3em .6em; vertical-align: top; }
th { background: #f3f3f5; font-weight: 600; text-align: center; font-size: .92em; }
th .sub, td .sub { display: block; font-weight: normal; color: #666; font-size: .85em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.metric { white-space: nowrap; } td.metric code { color: #777; font-size: .8em; }
.headline { background: #fff6da; } th.headline { background: #ffe9a8; }
td.na { color: #aaa; text-align: center; } .warn { color: #b00020; font-weight: 600; }
pre { white-space: pre-wrap; margin: 0; font-size: .85em; max-height: 16em; overflow: auto; }
footer { margin-top: 3em; color: #666; font-size: .85em; border-top: 1px solid #ddd; padding-top: .6em; }
"""

_EXPLAIN = (
    "2AFC scores in percent: the agreement of the metric with the people who judged each triplet. "
    "<b>worst case</b> is the per-sample minimum over the attacks of its threat model, norm and budget "
    "(the headline robust score, highlighted); <b>certified</b> counts a sample only where its certified "
    "radius exceeds ε and otherwise gives it the worst score an adversary can force; <b>distance</b> "
    "shows the mean distance d(x, x+δ) an attack reached and, when certifiable, the mean certified upper bound."
)


@dataclass(frozen=True)
class Column:
    """One evaluated setting of a (dataset, split) table."""

    kind: str
    attack: str
    threat: str
    norm: str
    eps: float

    def sort_key(self) -> tuple:
        # natural; then per (threat, norm, ε): worst, single attacks, certified; distances last
        section = 0 if self.kind == "natural" else 2 if self.kind == "distance" else 1
        within = {"worst": 0, "attack": 1, "certified": 2}.get(self.kind, 3)
        return (section, self.threat, self.norm, self.eps, within, self.attack, self.kind)

    @property
    def headline(self) -> bool:
        return self.kind == "worst"

    def label(self) -> str:
        """Header cell content (HTML, escaped)."""
        budget = f"{fmt_norm(self.norm)} ε={fmt_eps(self.eps)}"
        threat = f'<span class="sub">threat: {escape(self.threat)}</span>' if self.threat else ""
        if self.kind == "natural":
            return "natural"
        if self.kind == "worst":
            title = "worst case"
        elif self.kind == "certified":
            return f"certified {escape(budget)}{threat}"
        elif self.kind == "distance":
            title = f"distance{' · ' + self.attack if self.attack else ''}"
        else:
            title = self.attack or self.kind
        return f'{escape(title)}<span class="sub">{escape(budget)}</span>{threat}'


def render(agg: pl.DataFrame, failures: list[dict], *, generated_at: str, generator: str,
           not_evaluated: list[dict] | None = None) -> str:
    """The whole page. ``agg``: :func:`leaderboard.aggregate.aggregate` output; ``failures``:
    ``ResultStore.failures()``; ``generated_at``: a time stamp; ``generator``: suite version that built it;
    ``not_evaluated``: ``ResultStore.not_evaluated()`` (metrics whose weights are missing, with the reason)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>LipSim robustness suite — leaderboard</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Perceptual similarity metrics under attack</h1>",
        f'<p class="meta">LipSim robustness suite leaderboard · generated {escape(generated_at)}</p>',
        f'<p class="note">{_EXPLAIN}</p>',
    ]
    if agg.is_empty():
        parts.append("<p><b>No finished cells yet.</b> Run a benchmark config to fill the store.</p>")
    for (dataset, split), entries in _by_table(agg):
        parts.append(_table(dataset, split, entries))
    parts.append(_not_evaluated(not_evaluated or []))
    parts.append(_failures(failures))
    parts.append(_footer(agg, generated_at, generator))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _by_table(agg: pl.DataFrame):
    keys = agg.select("dataset", "split").unique().sort(["dataset", "split"]).rows()
    for dataset, split in keys:
        yield (dataset, split), agg.filter((pl.col("dataset") == dataset) & (pl.col("split") == split))


def _table(dataset: str, split: str, entries: pl.DataFrame) -> str:
    cells: dict[tuple[str, str], dict[Column, dict]] = {}
    for entry in entries.iter_rows(named=True):
        column = Column(entry["kind"], entry["attack"], entry["threat"], entry["norm"], float(entry["eps"]))
        cells.setdefault((entry["metric"], entry["metric_id"]), {})[column] = entry
    columns = sorted({c for row in cells.values() for c in row}, key=Column.sort_key)
    rank_by = next((c for c in columns if c.kind == "worst"), None) \
        or next((c for c in columns if c.kind == "certified"), None) \
        or next((c for c in columns if c.kind == "natural"), None)

    def rank(item):
        entry = item[1].get(rank_by) if rank_by else None
        score = entry["score"] if entry else None
        return (score is None, -(score or 0.0), item[0])

    rows = sorted(cells.items(), key=rank)
    head = "".join(f'<th class="headline">{c.label()}</th>' if c.headline else f"<th>{c.label()}</th>"
                   for c in columns)
    body = []
    for (metric, metric_id), by_column in rows:
        tds = "".join(_cell(c, by_column.get(c)) for c in columns)
        body.append(f'<tr><td class="metric"><b>{escape(metric)}</b>'
                    f'<span class="sub"><code title="{escape(metric_id)}">{escape(metric_id[:12])}</code></span>'
                    f"</td>{tds}</tr>")
    ranked = f"Sorted by {_plain(rank_by)}." if rank_by else ""
    return (f"<h2>{escape(dataset)} · {escape(split)}</h2>\n"
            f'<p class="meta">{len(rows)} metric(s), {len(columns)} setting(s). {escape(ranked)}</p>\n'
            f"<table>\n<thead><tr><th>metric</th>{head}</tr></thead>\n<tbody>\n"
            + "\n".join(body) + "\n</tbody></table>")


def _plain(column: Column) -> str:
    if column.kind == "natural":
        return "natural score"
    what = {"worst": "worst-case score", "certified": "certified score"}.get(column.kind, column.kind)
    threat = f", threat {column.threat}" if column.threat else ""
    return f"{what} at {fmt_norm(column.norm)} ε={fmt_eps(column.eps)}{threat}"


def _cell(column: Column, entry: dict | None) -> str:
    klass = " headline" if column.headline else ""
    if entry is None:
        return f'<td class="na{klass}">—</td>'
    title = f"n={entry['n']} samples in {entry['cells']} cell(s)"
    if column.kind == "distance":
        reached = _num(entry["distance_mean"], 4)
        bound = _num(entry["bound_mean"], 4)
        text = f"{reached} ≤ {bound}" if entry["bound_mean"] is not None else reached
        if entry["over_bound"]:
            text += f'<span class="sub warn">{entry["over_bound"]} over the bound</span>'
        return f'<td class="num{klass}" title="{escape(title)}">{text}</td>'
    text = _num(entry["score"], 2)
    if column.kind == "certified" and entry["radius_median"] is not None:
        text += f'<span class="sub">median radius {_num(entry["radius_median"], 3)}</span>'
        title += f"; mean radius {_num(entry['radius_mean'], 4)}"
    return f'<td class="num{klass}" title="{escape(title)}">{text}</td>'


def _num(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _not_evaluated(entries: list[dict]) -> str:
    if not entries:
        return ""
    rows = []
    for entry in entries:
        spec = entry.get("spec") or {}
        what = spec.get("metric") or spec.get("metric_name") or entry.get("key")
        rows.append(f"<tr><td class=\"metric\">{escape(str(what))}</td>"
                    f"<td><pre>{escape(str(entry.get('error') or ''))}</pre></td></tr>")
    return (f"<h2>Not evaluated ({len(entries)})</h2>\n"
            '<p class="note">Their weights are not on the machine that ran the benchmark: not a failure. '
            "Put the file where the reason says (or fetch it) and rerun the config.</p>\n"
            "<table><thead><tr><th>metric</th><th>reason</th></tr></thead><tbody>\n"
            + "\n".join(rows) + "\n</tbody></table>")


def _failures(failures: list[dict]) -> str:
    if not failures:
        return "<h2>Failed cells</h2>\n<p>None: every cell in the store finished.</p>"
    rows = []
    for failure in failures:
        spec = json.dumps(failure.get("spec"), sort_keys=True, ensure_ascii=False)
        rows.append(f"<tr><td><code>{escape(str(failure.get('key', '')))}</code>"
                    f'<span class="sub">{escape(str(failure.get("finished_at") or ""))}</span></td>'
                    f"<td><code>{escape(spec)}</code></td>"
                    f"<td><pre>{escape(str(failure.get('error') or ''))}</pre></td></tr>")
    return (f"<h2>Failed cells ({len(failures)})</h2>\n"
            '<p class="note">These cells raised; they are not in the tables above. '
            "Rerunning the config retries them.</p>\n"
            "<table><thead><tr><th>cell</th><th>specification</th><th>error</th></tr></thead><tbody>\n"
            + "\n".join(rows) + "\n</tbody></table>")


def _footer(agg: pl.DataFrame, generated_at: str, generator: str) -> str:
    versions = sorted({v for joined in agg["suite_version"].to_list() for v in joined.split(", ") if v})
    n_rows = int(agg["n"].sum()) if not agg.is_empty() else 0
    n_cells = int(agg["cells"].sum()) if not agg.is_empty() else 0
    written = f"results written by suite version {', '.join(versions)}" if versions else "no results yet"
    return (f"<footer>Built by lipsim-suite {escape(generator)} with <code>python -m leaderboard RESULTS_DIR</code> "
            f"at {escape(generated_at)}, from {n_rows} per-sample rows in {n_cells} finished cell(s) of the "
            f"result store; {escape(written)}. Generated from the result files, never edited by hand.</footer>")
