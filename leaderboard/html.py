"""The leaderboard as one static, self-contained HTML page: inline CSS, inline SVG figures and one
small inline script (column sorting); nothing is fetched from the network.

:func:`render` is a pure function of the aggregated entries (leaderboard/aggregate.py), the
store's failed and not-evaluated cells and the provenance records: the page shows what the
store holds, nothing more. Every text that comes from results (labels, split names, options,
errors, paths) is HTML-escaped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from html import escape
from typing import Any

import polars as pl

from leaderboard import figures as figs
from leaderboard.formatting import fmt_eps, fmt_norm, fmt_num, fmt_options
from leaderboard.headline import Column, Row, Table, headline_tables
from leaderboard.intervals import LEVEL, RESAMPLES, SEED
from leaderboard.published import Figure, matching
from leaderboard.retrieval import RetrievalColumn, RetrievalTable, retrieval_tables
from leaderboard.standards import PAPER_GRADE
from suite.invariants import BOUND_ATOL, BOUND_RTOL

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 90em;
       padding: 1em 1.4em 3em; color: #1d1d1f; }
h1 { font-size: 1.6em; margin: .3em 0 .1em; }
h2 { margin-top: 2.2em; font-size: 1.3em; border-bottom: 2px solid #e4e4e8; padding-bottom: .2em; }
h3 { margin: 1.6em 0 .4em; font-size: 1.08em; } h4 { margin: 1.3em 0 .3em; font-size: .98em; }
.meta, .note { color: #555; } .note { max-width: 64em; }
nav.toc { margin: .6em 0; } nav.toc a { margin-right: 1.1em; white-space: nowrap; }
.banner { background: #fff3cd; border: 1px solid #e0b400; border-left: 6px solid #e0b400; padding: .55em .9em;
          margin: .9em 0; border-radius: 4px; max-width: 64em; }
.banner.alarm { background: #fde8e8; border-color: #c62828; }
.scroll { overflow-x: auto; max-width: 100%; border: 1px solid #dcdce2; border-radius: 4px; margin: .5em 0; }
table { border-collapse: separate; border-spacing: 0; }
.board th, .board td { border-bottom: 1px solid #e6e6ea; border-right: 1px solid #f0f0f3; padding: .35em .7em;
                       vertical-align: top; background: #fff; }
.board th { background: #f4f4f7; font-weight: 600; text-align: center; font-size: .9em; }
.board .sticky { position: sticky; left: 0; z-index: 1; box-shadow: inset -1px 0 0 #c4c4cc; text-align: left; }
.board th.sticky { z-index: 2; background: #f4f4f7; }
.board th.headline { background: #fff1c9; }
.board th[data-type] { cursor: pointer; user-select: none; } .board th[data-type]:hover { background: #e9e9f0; }
.board th[aria-sort="descending"]::after { content: " \\25BC"; font-size: .75em; }
.board th[aria-sort="ascending"]::after { content: " \\25B2"; font-size: .75em; }
th .sub, td .sub { display: block; font-weight: normal; color: #666; font-size: .82em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td .ci { display: block; color: #888; font-size: .78em; }
td.best { background: #e3f3e6; } td.best .v { font-weight: 700; }
td.na { color: #aaa; text-align: center; }
td.metric { white-space: nowrap; } td.metric code { color: #777; font-size: .8em; }
.flag { color: #a35a00; font-weight: 700; cursor: help; }
.badge { display: inline-block; font-size: .72em; padding: 0 .4em; margin-left: .3em; border-radius: 3px;
         background: #fff1c9; color: #6b4500; font-weight: 600; vertical-align: middle; }
.badge.bad, .random { background: #fde8e8; color: #b00020; }
.random { font-weight: 700; }
.warn { color: #b00020; font-weight: 700; }
.rep { display: block; color: #1a5fb4; font-size: .78em; }
.plain td, .plain th { border: 1px solid #dcdce2; padding: .3em .6em; vertical-align: top; text-align: left; }
.plain th { background: #f4f4f7; }
figure { margin: 1em 0 1.4em; } figure svg { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: .9em; max-width: 64em; }
pre { white-space: pre-wrap; margin: 0; font-size: .85em; max-height: 16em; overflow: auto; }
details summary { cursor: pointer; color: #555; }
footer { margin-top: 3em; color: #666; font-size: .85em; border-top: 1px solid #ddd; padding-top: .6em; }
"""

# Sorts a table.board by a clicked header: numbers from each cell's data-sort, empty cells last;
# the first click sorts descending (ascending where the header says data-first="asc"), the next reverses.
_SCRIPT = """
document.querySelectorAll("table.board").forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    if (!th.dataset.type) return;
    th.tabIndex = 0;
    function sort() {
      var now = th.getAttribute("aria-sort");
      var asc = now ? now === "descending" : th.dataset.first === "asc";
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var v = row.cells[col] ? row.cells[col].dataset.sort : undefined;
        if (v === undefined || v === "") return null;
        return th.dataset.type === "num" ? parseFloat(v) : v.toLowerCase();
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) return x === null ? (y === null ? 0 : 1) : -1;
        return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
      });
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      rows.forEach(function (row) { body.appendChild(row); });
    }
    th.addEventListener("click", sort);
    th.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); }
    });
  });
});
"""


@dataclass
class Context:
    """What the page shows besides the entries (all optional: the page says what it lacks)."""

    failures: list[dict] = field(default_factory=list)
    not_evaluated: list[dict] = field(default_factory=list)
    damaged: list[dict] = field(default_factory=list)
    counts: dict[str, int] | None = None
    metrics: dict[tuple[str, str], dict] = field(default_factory=dict)
    datasets: dict[tuple[str, str, str], dict] = field(default_factory=dict)
    evaluations: list[dict] = field(default_factory=list)
    published: list[Figure] = field(default_factory=list)
    commit: str | None = None
    results: str = ""
    retrieval: pl.DataFrame | None = None
    """:func:`leaderboard.retrieval.retrieval_entries` of the store (the copy-detection section); none: no section."""


def render(agg: pl.DataFrame, failures: list[dict], *, generated_at: str, generator: str,
           not_evaluated: list[dict] | None = None, context: Context | None = None) -> str:
    """The whole page. ``agg``: :func:`leaderboard.aggregate.aggregate` output; ``failures``:
    ``ResultStore.failures()``; ``generated_at``: a time stamp; ``generator``: suite version that built it;
    ``not_evaluated``: ``ResultStore.not_evaluated()`` (metrics that could not run here, with the reason);
    ``context``: counts, provenance, published figures, commit (:class:`Context`)."""
    ctx = replace(context or Context(), failures=failures, not_evaluated=not_evaluated or [])
    tables = headline_tables(agg)
    copies = retrieval_tables(ctx.retrieval)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>LipSim robustness suite — leaderboard</title>",
        f"<style>{_CSS}</style></head><body>",
        "<header><h1>Perceptual similarity metrics under attack</h1>",
        f'<p class="meta">LipSim robustness suite leaderboard · generated {escape(generated_at)}'
        + (f" · results <code>{escape(ctx.results)}</code>" if ctx.results else "") + "</p></header>",
        _banners(agg, tables, ctx),
        _toc(tables, ctx),
        f'<p class="note">{_EXPLAIN}</p>',
    ]
    if agg.is_empty() and not copies:
        parts.append("<p><b>No finished cells yet.</b> Run a benchmark config to fill the store.</p>")
    for i, table in enumerate(tables, start=1):
        parts.append(_section(i, table, ctx))
    parts.append(_copy_detection(copies, ctx))
    parts.append(_provenance(ctx, generated_at, generator))
    parts.append(_not_evaluated(ctx.not_evaluated))
    parts.append(_failures(ctx.failures))
    parts.append(_damaged(ctx.damaged))
    parts.append(_footer(agg, ctx, generated_at, generator))
    parts.append(f"<script>{_SCRIPT}</script>")
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p) + "\n"


_EXPLAIN = (
    "2AFC scores in percent: the agreement of the metric with the people who judged each triplet. "
    "<b>worst case</b> is the per-sample minimum over every attack run at that threat model, norm and budget "
    "(the headline robust score); <b>certified</b> counts a sample only where its certified radius exceeds ε "
    "and otherwise gives it the worst score an adversary can force. The headline tables use threat <b>ref</b> "
    "(only the reference image is perturbed, as in LipSim and Croce et al.); other threats follow in the details. "
    f"Each score carries its {int(LEVEL * 100)}% interval (bootstrap over samples, {RESAMPLES} resamples, seed {SEED}) "
    "below it; the best value of each column is highlighted; click a column header to sort. "
    "<span class=\"flag\">†</span> marks a <b>non-standard</b> evaluation: an attack run with less effort than its "
    "published default (fewer iterations, queries, restarts or steps"
    + "".join(f"; {escape(name)}: {escape(fmt_options(opts))}" for name, opts in sorted(PAPER_GRADE.items()))
    + " for a paper-grade evaluation). A worst case is standard when at least one of its attacks is."
)


def _banners(agg: pl.DataFrame, tables: list[Table], ctx: Context) -> str:
    out = []
    smoke = sorted({t.dataset for t in tables if t.smoke})
    if smoke:
        out.append(f'<div class="banner"><b>Smoke test, not a perceptual benchmark.</b> Results on '
                   f"{escape(', '.join(smoke))} come from synthetic triplets (photographs shipped with scikit-image "
                   "and computed judgements): they show that the pipeline runs end to end. They say nothing about how "
                   "well a metric agrees with people; do not cite them.</div>")
    over = int(agg["over_bound"].sum()) if not agg.is_empty() else 0
    if over:
        out.append(f'<div class="banner alarm"><b>{over} distance sample(s) exceed their certified bound</b> by more '
                   "than float round-off: a certificate or an attack is broken (see the distance tables).</div>")
    random = sorted(m["metric"] for m in ctx.metrics.values() if m["random_weights"])
    if random:
        out.append(f'<div class="banner"><b>Random weights:</b> {escape(", ".join(random))} ran with untrained '
                   "networks; their rows are baselines, not the published metrics.</div>")
    if ctx.failures:
        out.append(f'<div class="banner alarm"><b>{len(ctx.failures)} cell(s) failed</b> and are missing from the '
                   'tables: see <a href="#failed">failed cells</a>.</div>')
    if ctx.damaged:
        out.append(f'<div class="banner alarm"><b>{len(ctx.damaged)} cell(s) do not verify</b> (their rows do not '
                   'match their sidecar) and are missing from the tables: see <a href="#damaged">cells that do not '
                   "verify</a>. The next run of their config recomputes them.</div>")
    return "\n".join(out)


def _toc(tables: list[Table], ctx: Context) -> str:
    links = [f'<a href="#table-{i}">{escape(t.title())}</a>' for i, t in enumerate(tables, start=1)]
    if ctx.retrieval is not None and not ctx.retrieval.is_empty():
        links.append('<a href="#copy-detection">copy detection</a>')
    links.append('<a href="#provenance">provenance</a>')
    if ctx.not_evaluated:
        links.append('<a href="#not-evaluated">not evaluated</a>')
    links.append('<a href="#failed">failed cells</a>')
    if ctx.damaged:
        links.append('<a href="#damaged">cells that do not verify</a>')
    return f'<nav class="toc">Contents: {" ".join(links)}</nav>'


# one dataset split


def _section(i: int, table: Table, ctx: Context) -> str:
    meta = _dataset_meta(table, ctx, "samples")
    parts = [f'<section id="table-{i}">', f"<h2>{escape(table.dataset)} · {escape(table.split)}</h2>",
             f'<p class="meta">{" · ".join(meta)}</p>']
    if table.smoke:
        parts.append('<div class="banner"><b>Smoke test:</b> synthetic 2AFC triplets, not a perceptual benchmark.'
                     "</div>")
    parts.append("<h3>Headline: threat ref</h3>")
    parts.append(_headline_table(i, table, ctx))
    parts.append(f'<p class="meta">{escape(table.ranked_by())} n: samples of the natural score. '
                 "Hover a score for its interval and provenance.</p>")
    parts.append(_figures(i, table))
    parts.append(_details(i, table, ctx))
    parts.append(_published(table, ctx))
    parts.append("</section>")
    return "\n".join(p for p in parts if p)


def _headline_table(i: int, table: Table, ctx: Context) -> str:
    best = {c: _best([r.entries.get(c) for r in table.rows]) for c in table.columns}
    head = ['<th class="sticky" data-type="text" data-first="asc">metric</th>',
            '<th data-type="num" data-first="asc" title="' + escape(table.ranked_by()) + '">rank</th>']
    for column in table.columns:
        members = _members([r.entries.get(column) for r in table.rows]) if column.kind == "worst" else ""
        klass = ' class="headline"' if column.kind == "worst" else ""
        budget = f'<span class="sub">{escape(column.budget)}</span>' if column.budget else ""
        head.append(f'<th{klass} data-type="num">{escape(column.title)}{budget}{members}</th>')
    head.append('<th data-type="num">n</th>')
    body = []
    for row in table.rows:
        cells = [_metric_cell(row, ctx), f'<td class="num" data-sort="{row.rank or ""}">{row.rank or "—"}</td>']
        for column in table.columns:
            entry = row.entries.get(column)
            reported = _reported(table, row, column, ctx) if entry is not None else ""
            cells.append(_score_cell(entry, _describe(column), best[column], headline=column.kind == "worst",
                                     extra=reported))
        cells.append(f'<td class="num" data-sort="{row.n or ""}">{row.n or "—"}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table class="board" id="headline-{i}">\n<thead><tr>{"".join(head)}</tr></thead>\n'
            f"<tbody>\n" + "\n".join(body) + "\n</tbody></table></div>")


def _describe(column: Column) -> str:
    return "natural score" if column.kind == "natural" else f"{column.title} at {column.budget}"


def _members(entries: list[dict | None]) -> str:
    """Header line of a worst-case column: the attacks of its entries, † on the non-standard ones."""
    return _over([e for e in entries if e is not None])


def _over(entries: list[dict]) -> str:
    """``over autoattack† + mia + pgd†``: the attacks of worst-case entries (their ``options_label``),
    † on those their ``nonstandard`` names; the full options and reasons on hover."""
    labels = sorted({e["options_label"] for e in entries if e["options_label"]})
    why = sorted({e["nonstandard"] for e in entries if e["nonstandard"]})
    if not labels:
        return ""
    names = sorted({part.split(" (")[0] for label in labels for part in label.split(" + ")})
    flagged = {part.split(":")[0] for w in why for part in w.split("; ")}
    shown = " + ".join(escape(n) + ('<span class="flag">†</span>' if n in flagged else "") for n in names)
    title = escape("; ".join(labels) + (" — non-standard: " + "; ".join(why) if why else ""))
    return f'<span class="sub" title="{title}">over {shown}</span>'


def _metric_cell(row: Row, ctx: Context) -> str:
    info = ctx.metrics.get((row.metric, row.metric_id), {})
    badge = '<span class="badge random">random weights</span>' if info.get("random_weights") else ""
    return (f'<td class="sticky metric" data-sort="{escape(row.metric)}"><b>{escape(row.metric)}</b>{badge}'
            f'<span class="sub"><code title="metric id {escape(row.metric_id)}">{escape(row.metric_id[:12])}</code>'
            f"</span></td>")


def _best(entries: list[dict | None]) -> float | None:
    scores = [e["score"] for e in entries if e is not None and e["score"] is not None]
    return max(scores) if len(scores) > 1 else None


def _score_cell(entry: dict | None, what: str, best: float | None, *, headline: bool = False,
                extra: str = "") -> str:
    """A score with its interval; ``best`` highlights the column's best value."""
    klass = " headline" if headline else ""
    if entry is None or entry["score"] is None:
        return f'<td class="na{klass}">—</td>'
    score = entry["score"]
    if best is not None and abs(score - best) < 1e-9:
        klass += " best"
    interval = (f"{fmt_num(entry['ci_low'], 1)}–{fmt_num(entry['ci_high'], 1)}"
                if entry["ci_low"] is not None else "")
    title = [f"{what}: {score:.2f}%"]
    if interval:
        title.append(f"{int(LEVEL * 100)}% interval {entry['ci_low']:.2f}–{entry['ci_high']:.2f} "
                     f"(bootstrap over samples)")
    title.append(f"n={entry['n']} samples in {entry['cells']} cell(s)")
    if entry["options_label"]:
        title.append(f"attack: {entry['options_label']}")
    if entry["kind"] == "certified" and entry["radius_median"] is not None:
        title.append(f"median radius {fmt_num(entry['radius_median'], 4)}, mean {fmt_num(entry['radius_mean'], 4)}")
    if entry["finished_at"]:
        title.append(f"finished {entry['finished_at']}, suite {entry['suite_version']}")
    flag = ""
    if entry["standard"] is False:
        flag = f'<sup class="flag" title="{escape("non-standard: " + entry["nonstandard"])}">†</sup>'
    elif entry["nonstandard"]:
        title.append(f"includes non-standard attacks: {entry['nonstandard']}")
    radius = ""
    if entry["kind"] == "certified" and entry["radius_median"] is not None:
        radius = f'<span class="sub">median radius {fmt_num(entry["radius_median"], 3)}</span>'
    ci = f'<span class="ci">{interval}</span>' if interval else ""
    return (f'<td class="num{klass}" data-sort="{score:.6f}" title="{escape("; ".join(title))}">'
            f'<span class="v">{score:.2f}</span>{flag}{ci}{radius}{extra}</td>')


def _reported(table: Table, row: Row, column: Column, ctx: Context) -> str:
    info = ctx.metrics.get((row.metric, row.metric_id))
    if not ctx.published or info is None:
        return ""
    found = matching(ctx.published, kind=column.kind, dataset=table.dataset, split=table.split,
                     threat="ref", norm=column.norm, eps=column.eps, metric_name=info["metric_name"],
                     metric_options=info["metric_options"])
    return "".join(f'<span class="rep" title="{escape(_cite(f))}">reported {f.score:g} '
                   f"({escape(f.label())})</span>" for f in found)


def _cite(fig: Figure) -> str:
    attack = f", {fig.attack}" if fig.attack else ""
    return f"{fig.citation}: {fig.what}{attack}"


# figures


def _figures(i: int, table: Table) -> str:
    parts = []
    svg = figs.score_curves(table, prefix=f"t{i}s-")
    if svg:
        parts.append(_figure(svg, "2AFC score against ε under threat ref: worst case over every attack (solid, "
                                  "starting at the natural score), certified score (dashed); shaded: 95% intervals."))
    svg = figs.tradeoff(table, prefix=f"t{i}t-")
    if svg:
        parts.append(_figure(svg, "Natural against worst-case robust score, one point per metric and ε (threat ref); "
                                  "the dotted diagonal is no loss under attack."))
    svg = figs.distance_curves(table, prefix=f"t{i}d-")
    if svg:
        parts.append(_figure(svg, "The distance attack's d(x, x + δ) against ε: mean (line) and largest (circles) "
                                  "over samples, and the mean certified upper bound (dashed) for certifiable metrics. "
                                  "Each metric has its own scale."))
    return ("<h3>Figures</h3>\n" + "\n".join(parts)) if parts else ""


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"


# details per (threat, norm)


@dataclass(frozen=True)
class _Detail:
    kind: str
    eps: float
    attack: str = ""
    attack_options: str = ""

    def sort_key(self) -> tuple:
        return (self.kind != "natural", self.eps, {"worst": 0, "attack": 1, "certified": 2}.get(self.kind, 3),
                self.attack, self.attack_options)


def _details(i: int, table: Table, ctx: Context) -> str:
    entries = table.entries
    order = list(table.rows)
    natural = {(r.metric, r.metric_id): r.entries.get(Column("natural")) for r in order}
    parts = []
    scored = entries.filter(pl.col("kind").is_in(["attack", "worst", "certified"]))
    groups = sorted(set(zip(scored["threat"], scored["norm"])), key=lambda g: (g[0] != "ref", g[0], g[1] != "l2", g[1]))
    for j, (threat, norm) in enumerate(groups, start=1):
        mine = scored.filter((pl.col("threat") == threat) & (pl.col("norm") == norm))
        cells: dict[tuple[str, str], dict[_Detail, dict]] = {}
        for e in mine.iter_rows(named=True):
            cells.setdefault((e["metric"], e["metric_id"]), {})[_Detail(e["kind"], e["eps"], e["attack"],
                                                                       e["attack_options"])] = e
        columns = sorted({c for by in cells.values() for c in by}, key=_Detail.sort_key)
        labels = {c: next(by[c] for by in cells.values() if c in by) for c in columns}
        best = {c: _best([cells.get((r.metric, r.metric_id), {}).get(c) for r in order]) for c in columns}
        nat_best = _best(list(natural.values()))
        head = ['<th class="sticky" data-type="text" data-first="asc">metric</th>', '<th data-type="num">natural</th>']
        for c in columns:
            head.append(_detail_header(c, labels[c]))
        body = []
        for r in order:
            by = cells.get((r.metric, r.metric_id), {})
            tds = [_metric_cell(r, ctx), _score_cell(natural[(r.metric, r.metric_id)], "natural score", nat_best)]
            for c in columns:
                e = by.get(c)
                what = f"{c.kind if c.kind != 'attack' else c.attack} at {fmt_norm(norm)} ε={fmt_eps(c.eps)}, " \
                       f"threat {threat}"
                tds.append(_score_cell(e, what, best[c], headline=c.kind == "worst"))
            body.append("<tr>" + "".join(tds) + "</tr>")
        parts.append(f'<h4 id="table-{i}-{escape(threat)}-{escape(norm)}">threat {escape(threat)} · '
                     f"{escape(fmt_norm(norm))}</h4>")
        parts.append(f'<div class="scroll"><table class="board" id="details-{i}-{j}">\n'
                     f'<thead><tr>{"".join(head)}</tr></thead>\n<tbody>\n' + "\n".join(body)
                     + "\n</tbody></table></div>")
    parts.append(_distance_table(i, table, ctx))
    parts.append(_minnorm_table(i, table, ctx))
    parts = [p for p in parts if p]
    if not parts:
        return ""
    return ("<h3>Details by threat model and norm</h3>\n<p class=\"meta\">Every evaluated setting: each attack with "
            "the options it ran with (those that differ from its defaults), each worst case with its attacks, each "
            "certificate.</p>\n" + "\n".join(parts))


def _detail_header(column: _Detail, entry: dict) -> str:
    budget = f'<span class="sub">ε={escape(fmt_eps(column.eps))}</span>'
    if column.kind == "worst":
        title = "worst case" + (" (all ensembles)" if entry["attack_options"].startswith('{"union"') else "")
        return f'<th class="headline" data-type="num">{escape(title)}{budget}{_over([entry])}</th>'
    if column.kind == "certified":
        if not column.attack:
            return f'<th data-type="num">certified<span class="sub">Lipschitz</span>{budget}</th>'
        how = f'<span class="sub">{escape(column.attack)}: {escape(entry["options_label"] or "defaults")}</span>'
        badge = ('<span class="badge" title="fewer noise samples than Cohen et al.\'s n = 100,000">non-standard</span>'
                 if _smoothing_samples(entry) < 100_000 else "")
        return f'<th data-type="num">certified{badge}{how}{budget}</th>'
    options = entry["options_label"]
    badge = ""
    if entry["standard"] is False:
        badge = f'<span class="badge" title="{escape(entry["nonstandard"])}">non-standard</span>'
    sub = f'<span class="sub">{escape(options)}</span>' if options else ""
    return f'<th data-type="num">{escape(column.attack)}{badge}{budget}{sub}</th>'


def _smoothing_samples(entry: dict) -> int:
    """``n`` of a randomized-smoothing entry, from its options (the paper's 100,000 when unknown)."""
    try:
        return int(json.loads(entry["attack_options"] or "{}").get("n", 100_000))
    except (ValueError, TypeError, AttributeError):
        return 100_000


def _distance_table(i: int, table: Table, ctx: Context) -> str:
    rows = table.entries.filter(pl.col("kind") == "distance")
    if rows.is_empty():
        return ""
    columns = sorted(set(zip(rows["norm"], rows["eps"], rows["attack"], rows["attack_options"])),
                     key=lambda c: (c[0] != "l2", c[0], c[1], c[2], c[3]))
    by = {(e["metric"], e["metric_id"], e["norm"], e["eps"], e["attack"], e["attack_options"]): e
          for e in rows.iter_rows(named=True)}
    first = {c: next(e for k, e in by.items() if k[2:] == c) for c in columns}
    head = ['<th class="sticky" data-type="text" data-first="asc">metric</th>']
    for c in columns:
        e = first[c]
        badge = (f'<span class="badge" title="{escape(e["nonstandard"])}">non-standard</span>'
                 if e["standard"] is False else "")
        head.append(f'<th data-type="num">{escape(c[2])}{badge}<span class="sub">{escape(fmt_norm(c[0]))} '
                    f'ε={escape(fmt_eps(c[1]))}</span><span class="sub">{escape(e["options_label"])}</span></th>')
    body = _rows_by_metric(table, ctx, by, columns, _distance_cell)
    note = ("Mean d(x, x + δ) reached by the distance attack ≤ the mean certified upper bound (certifiable "
            "metrics). "
            f"A sample is <b>over the bound</b> only when it exceeds its own bound by more than float round-off "
            f"({BOUND_RTOL:g}·|bound| + {BOUND_ATOL:g}, the tolerance of suite/invariants.py); that would mean a "
            "broken certificate or attack and is shown in red. Entries whose options name a center-smoothing "
            "bound (Kumar &amp; Goldstein 2021) are about the smoothed embedding: reached and bound are distances "
            "between smoothed embeddings, and the bound holds per sample with probability 1 − α, so they are never "
            "red; the run's invariant check flags an improbable count of excesses instead.")
    return (f"<h4>Distance attack: d(x, x + δ)</h4>\n<p class=\"meta\">{note}</p>\n"
            f'<div class="scroll"><table class="board" id="distance-{i}">\n<thead><tr>{"".join(head)}</tr></thead>\n'
            "<tbody>\n" + "\n".join(body) + "\n</tbody></table></div>")


def _distance_cell(e: dict) -> str:
    reached, bound = fmt_num(e["distance_mean"], 4), fmt_num(e["bound_mean"], 4)
    text = f"{reached} ≤ {bound}" if e["bound_mean"] is not None else reached
    title = [f"n={e['n']} samples in {e['cells']} cell(s)", f"largest reached {fmt_num(e['distance_max'], 6)}"]
    if e["over_bound_roundoff"]:
        title.append(f"{e['over_bound_roundoff']} sample(s) above their bound by float round-off only "
                     f"(≤ {BOUND_RTOL:g}·|bound| + {BOUND_ATOL:g}): not an excess")
    warn = f'<span class="sub warn">{e["over_bound"]} over the bound</span>' if e["over_bound"] else ""
    klass = " warn" if e["over_bound"] else ""
    sort = "" if e["distance_mean"] is None else f"{e['distance_mean']:.9g}"
    return (f'<td class="num{klass}" data-sort="{sort}" title="{escape("; ".join(title))}">{text}'
            f'<span class="sub">max {fmt_num(e["distance_max"], 4)}</span>{warn}</td>')


def _rows_by_metric(table: Table, ctx: Context, by: dict, columns: list, cell) -> list[str]:
    """One ``<tr>`` per metric of ``table`` that has an entry in some column: ``cell(entry)`` per column
    (``by`` maps ``(metric, metric_id, *column)`` to its entry), "—" where it has none."""
    body = []
    for r in table.rows:
        entries = [by.get((r.metric, r.metric_id, *c)) for c in columns]
        if any(e is not None for e in entries):
            tds = [_metric_cell(r, ctx)] + ['<td class="na">—</td>' if e is None else cell(e) for e in entries]
            body.append("<tr>" + "".join(tds) + "</tr>")
    return body


def _minnorm_cell(e: dict) -> str:
    median = e["radius_median"]
    sort = "" if median is None else ("1e308" if median == float("inf") else f"{median:.9g}")
    tight = ("" if e["tightness"] is None else
             f'<span class="sub">certified / empirical radius: median {fmt_num(e["tightness"], 3)}</span>')
    return (f'<td class="num" data-sort="{sort}">{fmt_num(median, 4)}<span class="sub">flipped '
            f'{e["flipped"]}/{e["n"]} within ε ≤ {escape(fmt_eps(e["eps"]))}</span>{tight}</td>')


def _minnorm_table(i: int, table: Table, ctx: Context) -> str:
    rows = table.entries.filter(pl.col("kind") == "minnorm")
    if rows.is_empty():
        return ""
    columns = sorted(set(zip(rows["threat"], rows["norm"], rows["attack"], rows["attack_options"])))
    by = {(e["metric"], e["metric_id"], e["threat"], e["norm"], e["attack"], e["attack_options"]): e
          for e in rows.iter_rows(named=True)}
    head = ['<th class="sticky" data-type="text" data-first="asc">metric</th>']
    for threat, norm, attack, _ in columns:
        head.append(f'<th data-type="num">{escape(attack)}<span class="sub">{escape(fmt_norm(norm))}, threat '
                    f"{escape(threat)}</span></th>")
    body = _rows_by_metric(table, ctx, by, columns, _minnorm_cell)
    return ("<h4>Minimal adversarial radius</h4>\n<p class=\"meta\">Median over samples of the smallest ε at which "
            "the attack flipped the decision (∞ when it found none up to its ceiling); a certified radius must "
            "never exceed it, and the median ratio of the two says how much of the real robustness the "
            "certificate proves.</p>\n"
            f'<div class="scroll"><table class="board" id="minnorm-{i}">\n<thead><tr>{"".join(head)}</tr></thead>\n'
            "<tbody>\n" + "\n".join(body) + "\n</tbody></table></div>")


def _published(table: Table, ctx: Context) -> str:
    if not ctx.published:
        return ""
    lines = []
    for row in table.rows:
        info = ctx.metrics.get((row.metric, row.metric_id))
        if info is None:
            continue
        for column, entry in row.entries.items():
            for fig in matching(ctx.published, kind=column.kind, dataset=table.dataset, split=table.split,
                                threat="ref", norm=column.norm, eps=column.eps, metric_name=info["metric_name"],
                                metric_options=info["metric_options"]):
                ours = fmt_num(entry["score"], 2)
                lines.append(f"<tr><td>{escape(row.metric)}</td><td>{escape(_describe(column))}</td>"
                             f"<td>{ours}</td><td>{fig.score:g}</td><td>{escape(fig.label())}</td>"
                             f"<td>{escape(_cite(fig))}</td></tr>")
    if not lines:
        places = sorted({f"{f.dataset} {f.split}" for f in ctx.published})
        return (f'<p class="meta">No published figure matches these settings (published figures exist for '
                f"{escape(', '.join(places))}; see docs/published.md).</p>")
    return ("<h4>Published figures for the same settings</h4>\n<table class=\"plain\"><thead><tr><th>metric</th>"
            "<th>setting</th><th>ours</th><th>reported</th><th>as printed</th><th>source</th></tr></thead><tbody>\n"
            + "\n".join(lines) + "\n</tbody></table>")


# copy detection (retrieval)


def _copy_detection(tables: list[RetrievalTable], ctx: Context) -> str:
    """The copy-detection section: one table per (dataset, split), one row per metric (empty without
    retrieval rows)."""
    if not tables:
        return ""
    parts = ['<section id="copy-detection"><h2>Copy detection</h2>']
    for i, table in enumerate(tables, start=1):
        parts.append(_retrieval_table(i, table, ctx))
    parts.append("</section>")
    return "\n".join(parts)


def _dataset_meta(table, ctx: Context, unit: str) -> list[str]:
    """The meta line of a dataset's table: metrics, samples (or queries), options, limit, fingerprint."""
    info = ctx.datasets.get((table.dataset, table.split, table.dataset_fp), {})
    meta = [f"{len(table.rows)} metric(s)", f"{max((r.n or 0 for r in table.rows), default=0)} {unit}"]
    options = fmt_options(info.get("dataset_options") or {})
    if options:
        meta.append(f"dataset options: {escape(options)}")
    if info.get("limit"):
        meta.append(f"limit {escape(str(info['limit']))}")
    if table.dataset_fp:
        meta.append(f"fingerprint <code>{escape(table.dataset_fp)}</code>")
    return meta


def _retrieval_table(i: int, table: RetrievalTable, ctx: Context) -> str:
    meta = _dataset_meta(table, ctx, "queries")
    parts = [f'<h3 id="retrieval-{i}">{escape(table.title())}</h3>', f'<p class="meta">{" · ".join(meta)}</p>',
             f'<p class="note">{escape(table.explain())}</p>']
    if table.smoke:
        parts.append('<div class="banner"><b>Smoke test:</b> synthetic copies, not a copy-detection benchmark.'
                     "</div>")
    best = {c: _best_value([r.entries.get(c) for r in table.rows]) for c in table.columns}
    head = ['<th class="sticky" data-type="text" data-first="asc">metric</th>']
    for c in table.columns:
        budget = f'<span class="sub">{escape(c.budget)}</span>' if c.budget else ""
        over = sorted({r.entries[c]["attack"] for r in table.rows if c in r.entries and r.entries[c]["attack"]})
        over_text = (f'<span class="sub">over {escape(", ".join(over))}</span>'
                     if c.measure == "evasion" and over else "")
        head.append(f'<th data-type="num">{escape(c.title)}{budget}{over_text}</th>')
    head.append('<th data-type="num">n</th>')
    body = []
    for r in table.rows:
        cells = [_metric_cell(Row(r.metric, r.metric_id), ctx)]
        cells += [_retrieval_cell(r.entries.get(c), c, best[c]) for c in table.columns]
        cells.append(f'<td class="num" data-sort="{r.n or ""}">{r.n or "—"}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    parts.append(f'<div class="scroll"><table class="board" id="retrieval-table-{i}">\n'
                 f'<thead><tr>{"".join(head)}</tr></thead>\n<tbody>\n' + "\n".join(body)
                 + "\n</tbody></table></div>")
    parts.append('<p class="meta">n: queries of the natural recall@1. Hover a value for its interval and the rows '
                 "behind it.</p>")
    return "\n".join(parts)


def _best_value(entries: list[dict | None]) -> float | None:
    values = [e["value"] for e in entries if e is not None and e["value"] is not None]
    return max(values) if len(values) > 1 else None


def _retrieval_cell(entry: dict | None, column: RetrievalColumn, best: float | None) -> str:
    if entry is None or entry["value"] is None:
        return '<td class="na">—</td>'
    value = entry["value"]
    klass = " best" if best is not None and abs(value - best) < 1e-9 else ""
    interval = (f"{fmt_num(entry['ci_low'], 1)}–{fmt_num(entry['ci_high'], 1)}"
                if entry["ci_low"] is not None else "")
    unit = "pairs" if column.measure == "collision" else "queries"
    title = [f"{column.describe()}: {value:.2f}%"]
    if interval:
        title.append(f"{int(LEVEL * 100)}% interval {entry['ci_low']:.2f}–{entry['ci_high']:.2f} "
                     "(bootstrap over queries)")
    title.append(f"n={entry['n']} {unit} in {entry['cells']} cell(s)")
    if entry["attack"]:
        title.append(f"{entry['kind']} rows of {entry['attack']}")
    ci = f'<span class="ci">{interval}</span>' if interval else ""
    return (f'<td class="num{klass}" data-sort="{value:.6f}" title="{escape("; ".join(title))}">'
            f'<span class="v">{value:.2f}</span>{ci}</td>')


# provenance, failures, footer


def _provenance(ctx: Context, generated_at: str, generator: str) -> str:
    parts = ['<section id="provenance"><h2>Provenance</h2>']
    if ctx.metrics:
        rows = []
        for info in sorted(ctx.metrics.values(), key=lambda m: (m["metric"], m["metric_id"])):
            weights = escape(info["weights_note"])
            if info["random_weights"]:
                weights = f'<span class="random">{weights}</span>'
            rows.append(f"<tr><td><b>{escape(info['metric'])}</b><span class=\"sub\">{escape(info['metric_name'])}"
                        f"</span></td><td><code>{escape(info['metric_id'])}</code></td><td>{weights}</td>"
                        f"<td>{_recipe(info.get('recipe'))}</td>"
                        f"<td><code>{escape(fmt_options(info['metric_options']) or '—')}</code></td></tr>")
        parts.append("<h3>Metrics</h3>\n<p class=\"meta\">The metric id hashes the weights and every option that "
                     "changes the function.</p>\n<table class=\"plain\"><thead><tr><th>metric</th><th>id</th>"
                     "<th>weights</th><th>training</th><th>options</th></tr></thead><tbody>\n"
                     + "\n".join(rows) + "\n</tbody></table>")
    if ctx.evaluations:
        rows = []
        for ev in ctx.evaluations:
            verdict = ("standard" if ev["standard"] else
                       f'<span class="warn">non-standard</span>: {escape(ev["nonstandard"])}'
                       if ev["standard"] is False else "unknown attack: not judged")
            rows.append(f"<tr><td><b>{escape(ev['attack'])}</b><span class=\"sub\">{escape(ev['kind'])}, "
                        f"{escape(ev['name'])}</span></td><td><code>{escape(fmt_options(ev['options']) or '—')}"
                        f"</code></td><td>{verdict}</td><td>{ev['cells']}</td>"
                        f"<td>{escape(ev['first'] or '')} – {escape(ev['last'] or '')}</td>"
                        f"<td>{escape(ev['suite_version'])}</td></tr>")
        parts.append("<h3>Attacks</h3>\n<p class=\"meta\">Every option each attack ran with (defaults filled in). "
                     "Non-standard: less effort than the attack's published default (leaderboard/standards.py)."
                     "</p>\n<table class=\"plain\"><thead><tr><th>attack</th><th>options</th><th>evaluation</th>"
                     "<th>cells</th><th>finished</th><th>suite</th></tr></thead><tbody>\n"
                     + "\n".join(rows) + "\n</tbody></table>")
    if ctx.datasets:
        rows = [f"<tr><td>{escape(d)}</td><td>{escape(s)}</td>"
                f"<td><code>{escape(fmt_options(v['dataset_options']) or '—')}</code></td>"
                f"<td>{escape(str(v['limit']) if v['limit'] is not None else '—')}</td>"
                f"<td><code>{escape(fp or '—')}</code></td></tr>"
                for (d, s, fp), v in sorted(ctx.datasets.items())]
        parts.append("<h3>Datasets</h3>\n<table class=\"plain\"><thead><tr><th>dataset</th><th>split</th>"
                     "<th>options</th><th>limit</th><th>fingerprint</th></tr></thead><tbody>\n"
                     + "\n".join(rows) + "\n</tbody></table>")
    commit = (f"git commit <code>{escape(ctx.commit)}</code> of the code that built this page (cells do not record "
              "the commit that computed them)" if ctx.commit else "git commit unknown (not a git checkout)")
    parts.append(f'<p class="meta">Page built by lipsim-suite {escape(generator)} at {escape(generated_at)}; '
                 f"{commit}.</p></section>")
    return "\n".join(parts)


def _recipe(recipe: dict | None) -> str:
    if not recipe:
        return "—"
    bits = []
    arch = recipe.get("architecture") or {}
    if arch:
        bits.append("architecture " + fmt_options(arch))
    if recipe.get("recipe"):
        bits.append("recipe " + fmt_options({k: v for k, v in recipe["recipe"].items() if not isinstance(v, dict)}))
        data = recipe["recipe"].get("dataset_options")
        if data:
            bits.append("training data options " + fmt_options(data))
    log = recipe.get("log") or {}
    if log:
        bits.append(f"{log['epochs']} epoch(s) logged, last loss {fmt_num(log.get('last_loss'), 4)}, "
                    f"validation score last {fmt_num(log.get('last_val_score'), 4)}, "
                    f"best {fmt_num(log.get('best_val_score'), 4)}")
    return "<br>".join(escape(b) for b in bits) + f'<span class="sub">{escape(recipe["folder"])}</span>'


def _not_evaluated(entries: list[dict]) -> str:
    if not entries:
        return ""
    rows = []
    for entry in entries:
        spec = entry.get("spec") or {}
        what = spec.get("metric") or spec.get("metric_name") or entry.get("key")
        rows.append(f"<tr><td class=\"metric\">{escape(str(what))}</td>"
                    f"<td><pre>{escape(str(entry.get('error') or ''))}</pre></td></tr>")
    return (f'<section id="not-evaluated"><h2>Not evaluated ({len(entries)})</h2>\n'
            '<p class="note">These could not be evaluated on the machine that ran the benchmark (their weights are '
            "not there): not a failure. Put the file where the reason says (or fetch it) and rerun the config.</p>\n"
            '<table class="plain"><thead><tr><th>metric</th><th>reason</th></tr></thead><tbody>\n'
            + "\n".join(rows) + "\n</tbody></table></section>")


def _failures(failures: list[dict]) -> str:
    if not failures:
        return '<section id="failed"><h2>Failed cells</h2>\n<p>None: every cell in the store finished.</p></section>'
    rows = []
    for failure in failures:
        spec = failure.get("spec") if isinstance(failure.get("spec"), dict) else {}
        text = json.dumps(failure.get("spec"), sort_keys=True, ensure_ascii=False)
        rows.append(f"<tr><td>{escape(_spec_line(spec))}<span class=\"sub\"><code>{escape(str(failure.get('key', '')))}"
                    f"</code> · {escape(str(failure.get('finished_at') or ''))}</span>"
                    f"<details><summary>specification</summary><code>{escape(text)}</code></details></td>"
                    f"<td><pre>{escape(str(failure.get('error') or ''))}</pre></td></tr>")
    return (f'<section id="failed"><h2>Failed cells ({len(failures)})</h2>\n'
            '<p class="note">These cells raised; they are not in the tables above. '
            "Rerunning the config retries them.</p>\n"
            '<table class="plain"><thead><tr><th>cell</th><th>error</th></tr></thead><tbody>\n'
            + "\n".join(rows) + "\n</tbody></table></section>")


def _damaged(damaged: list[dict]) -> str:
    if not damaged:
        return ""
    rows = [f"<tr><td>{escape(_spec_line(d.get('spec') or {}))}<span class=\"sub\"><code>{escape(str(d['key']))}"
            f"</code> · {escape(str(d.get('finished_at') or ''))}</span></td><td>{escape(str(d['problem']))}</td></tr>"
            for d in damaged]
    return (f'<section id="damaged"><h2>Cells that do not verify ({len(damaged)})</h2>\n'
            '<p class="note">Their sidecar says done but their rows do not verify (ResultStore.check); they are not '
            "in the tables above and the next run of their config recomputes them.</p>\n"
            '<table class="plain"><thead><tr><th>cell</th><th>what is wrong</th></tr></thead><tbody>\n'
            + "\n".join(rows) + "\n</tbody></table></section>")


def _spec_line(spec: dict[str, Any]) -> str:
    """``"lipsim nights/test attack pgd threat=ref l2 ε=0.5"`` from a cell spec (what is there of it)."""
    parts = [str(spec.get("metric", "?"))]
    if spec.get("dataset"):
        parts.append(f"{spec['dataset']}/{spec.get('split', '')}")
    for key in ("kind", "attack"):
        if spec.get(key):
            parts.append(str(spec[key]))
    if spec.get("threat"):
        parts.append(f"threat={spec['threat']}")
    if spec.get("norm"):
        budgets = spec.get("budgets") or []
        parts.append(f"{fmt_norm(str(spec['norm']))} ε=" + ", ".join(fmt_eps(b) for b in budgets
                                                                    if isinstance(b, (int, float))))
    return " ".join(parts)


def _footer(agg: pl.DataFrame, ctx: Context, generated_at: str, generator: str) -> str:
    versions = sorted({v for joined in agg["suite_version"].to_list() for v in (joined or "").split(", ") if v})
    written = f"results written by suite version {', '.join(versions)}" if versions else "no results yet"
    c = ctx.counts
    if c is None:
        counts = f"from {agg.height} aggregated entries"
    else:
        counts = (f"from {c['rows']} per-sample rows in {c['done'] + c['worst']} finished cell(s) of the result store "
                  f"({c['done']} evaluated cell(s) done and {c['worst']} worst-case cell(s) derived from them; "
                  f"{c['failed']} failed; {c['not_evaluated']} not evaluated"
                  + (f"; {c['missing']} missing (interrupted or not verifying), recomputed by the next run"
                     if c.get("missing") else "") + ")")
    return (f"<footer>Built by lipsim-suite {escape(generator)} with <code>python -m leaderboard RESULTS_DIR</code> "
            f"at {escape(generated_at)}, {counts}; {escape(written)}. "
            "Generated from the result files, never edited by hand.</footer>")


__all__ = ["Context", "render"]
