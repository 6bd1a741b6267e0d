"""The page's figures, drawn by matplotlib's SVG backend and inlined (no network, no display).

- :func:`score_curves`: 2AFC score against ε for each norm (threat ``ref``): worst case
  solid, certified dashed, one colour per metric, 95% intervals shaded; each worst-case
  curve starts at the natural score (ε = 0).
- :func:`tradeoff`: natural against worst-case robust score, one point per metric and ε.
- :func:`distance_curves`: the distance attack's mean d(x, x + δ) against ε per metric,
  its largest value, and the metric's mean certified bound when it has one.

Every figure is built on a bare :class:`matplotlib.figure.Figure` (no pyplot, no global
state) and written with ``savefig(format="svg")``; text stays text (``svg.fonttype =
"none"``), ids are salted by a fixed string and no date is written, so the same entries
always give the same bytes. The XML prolog, DOCTYPE and namespace declarations are dropped:
inline SVG in HTML needs none of them.
"""

from __future__ import annotations

import io
import re

import matplotlib
from matplotlib.figure import Figure

from leaderboard.formatting import fmt_eps_short, fmt_norm
from leaderboard.headline import Column, Table

_RC = {"svg.fonttype": "none", "svg.hashsalt": "lipsim-leaderboard", "font.size": 9,
       "font.family": ["DejaVu Sans"], "axes.spines.top": False, "axes.spines.right": False,
       "axes.grid": True, "grid.alpha": 0.3, "legend.frameon": False}
_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def colours(table: Table) -> dict[tuple[str, str], str]:
    """One colour per metric row of ``table``, in rank order (the same in every figure)."""
    return {(r.metric, r.metric_id): _COLOURS[i % len(_COLOURS)] for i, r in enumerate(table.rows)}


def text(label: str) -> str:
    """A label matplotlib shows literally: ``$`` would start mathtext, a leading ``_`` hides a legend entry."""
    label = label.replace("$", r"\$")
    return "\u200b" + label if label.startswith("_") else label


def score_curves(table: Table, prefix: str = "score-") -> str | None:
    """Score against ε per norm (see the module docstring); ``None`` without worst-case or certified columns."""
    norms = sorted({c.norm for c in table.columns if c.kind in ("worst", "certified")},
                   key=lambda n: (n != "l2", n))
    if not norms:
        return None
    colour = colours(table)
    with matplotlib.rc_context(_RC):
        fig, axes = _panels(len(norms), 4.2, 3.4, legend=_legend_width(table))
        for ax, norm in zip(axes, norms):
            for row in table.rows:
                c = colour[(row.metric, row.metric_id)]
                natural = row.entries.get(Column("natural"))
                for kind, style in (("worst", "-"), ("certified", "--")):
                    points = sorted((col.eps, e) for col, e in row.entries.items()
                                    if col.kind == kind and col.norm == norm and e["score"] is not None)
                    if not points:
                        continue
                    if kind == "worst" and natural is not None and natural["score"] is not None:
                        points.insert(0, (0.0, natural))
                    xs = [p[0] for p in points]
                    ax.plot(xs, [p[1]["score"] for p in points], style, color=c, marker="o" if kind == "worst" else "s",
                            markersize=3.5, linewidth=1.6)
                    low = [p[1]["ci_low"] if p[1]["ci_low"] is not None else p[1]["score"] for p in points]
                    high = [p[1]["ci_high"] if p[1]["ci_high"] is not None else p[1]["score"] for p in points]
                    ax.fill_between(xs, low, high, color=c, alpha=0.12 if kind == "worst" else 0.07, linewidth=0)
            budgets = sorted({col.eps for col in table.columns if col.norm == norm} | {0.0})
            ax.set_xticks(budgets, [fmt_eps_short(e) for e in budgets])
            ax.set_ylim(0, 100)
            ax.set_xlabel(f"{fmt_norm(norm)} budget ε (threat ref)")
            ax.set_ylabel("2AFC score (%)")
            ax.set_title(f"{fmt_norm(norm)}: score against ε")
        _legend(fig, table, colour, styles=[("-", "worst case"), ("--", "certified")])
        return _svg(fig, prefix)


def tradeoff(table: Table, prefix: str = "tradeoff-") -> str | None:
    """Natural against worst-case robust score per norm: one point per (metric, ε); ``None`` without data."""
    norms = sorted({c.norm for c in table.columns if c.kind == "worst"}, key=lambda n: (n != "l2", n))
    if not norms:
        return None
    colour = colours(table)
    with matplotlib.rc_context(_RC):
        fig, axes = _panels(len(norms), 3.8, 3.4, legend=_legend_width(table))
        for ax, norm in zip(axes, norms):
            budgets = sorted({c.eps for c in table.columns if c.kind == "worst" and c.norm == norm})
            for row in table.rows:
                natural = row.entries.get(Column("natural"))
                if natural is None or natural["score"] is None:
                    continue
                for i, eps in enumerate(budgets):
                    entry = row.entries.get(Column("worst", norm, eps))
                    if entry is None or entry["score"] is None:
                        continue
                    ax.plot([natural["score"]], [entry["score"]], linestyle="none", marker=_MARKERS[i % len(_MARKERS)],
                            color=colour[(row.metric, row.metric_id)], markersize=6, alpha=0.85)
            ax.plot([0, 100], [0, 100], ":", color="#999", linewidth=1)
            naturals = [e["score"] for r in table.rows for c, e in r.entries.items()
                        if c.kind == "natural" and e["score"] is not None]
            ax.set_xlim(max(0, 10 * int((min(naturals, default=0) - 5) // 10)), 100)
            ax.set_ylim(0, 100)
            ax.set_xlabel("natural score (%)")
            ax.set_ylabel(f"worst-case score (%), {fmt_norm(norm)}")
            ax.set_title(f"{fmt_norm(norm)}: accuracy against robustness")
            for i, eps in enumerate(budgets):
                ax.plot([], [], linestyle="none", marker=_MARKERS[i % len(_MARKERS)], color="#555",
                        label=f"ε={fmt_eps_short(eps)}")
            ax.legend(loc="upper left", fontsize=8)
        _legend(fig, table, colour)
        return _svg(fig, prefix)


def distance_curves(table: Table, prefix: str = "distance-") -> str | None:
    """Distance reached against ε, one panel per metric with distance rows; ``None`` without any."""
    rows = table.entries.filter(table.entries["kind"] == "distance")
    if rows.is_empty():
        return None
    colour = colours(table)
    metrics = [(r.metric, r.metric_id) for r in table.rows
               if not rows.filter((rows["metric"] == r.metric) & (rows["metric_id"] == r.metric_id)).is_empty()]
    with matplotlib.rc_context(_RC):
        fig, axes = _panels(len(metrics), min(3.0, 12 / len(metrics)), 3.0)
        for ax, (metric, metric_id) in zip(axes, metrics):
            mine = rows.filter((rows["metric"] == metric) & (rows["metric_id"] == metric_id))
            for i, (norm, attack) in enumerate(sorted(set(zip(mine["norm"], mine["attack_options"])))):
                part = mine.filter((mine["norm"] == norm) & (mine["attack_options"] == attack)).sort("eps")
                c = colour[(metric, metric_id)]
                eps = part["eps"].to_list()
                ax.plot(eps, part["distance_mean"].to_list(), "-o", color=c, markersize=3.5,
                        label=f"mean reached ({fmt_norm(norm)})" if i == 0 else None)
                ax.plot(eps, part["distance_max"].to_list(), "o", color=c, markersize=3, alpha=0.5,
                        markerfacecolor="none", label="largest reached" if i == 0 else None)
                if part["bound_mean"].null_count() < part.height:
                    ax.plot(eps, part["bound_mean"].to_list(), "--", color="#333", linewidth=1.3,
                            label="certified bound (mean)" if i == 0 else None)
            ax.set_title(text(metric), fontsize=9)
            ax.set_xlabel("ε")
            ax.legend(fontsize=7, loc="best")
        axes[0].set_ylabel("d(x, x + δ)")
        return _svg(fig, prefix)


#: inches around the panels: left, right (without legend), bottom, top, between panels
_MARGINS = (0.62, 0.15, 0.52, 0.32, 0.62)


def _legend_width(table: Table) -> float:
    """Inches for the figure legend: its longest label at 8 pt (about 0.07 in a character), plus the line."""
    longest = max((len(_short(r.metric)) for r in table.rows), default=10)
    return 0.55 + 0.07 * max(longest, 11)


def _short(label: str, limit: int = 40) -> str:
    """A legend label of at most ``limit`` characters (the tables show the whole label)."""
    return label if len(label) <= limit else label[: limit - 1] + "…"


def _panels(n: int, width: float, height: float, *, legend: float = 0.0) -> tuple[Figure, list]:
    """A figure of ``n`` panels side by side, each ``width`` × ``height`` inches with its margins, and
    ``legend`` inches on the right for a figure legend. The layout is fixed (constrained layout draws the
    figure several times, which would be most of the cost of a page)."""
    left, right, bottom, top, gap = _MARGINS
    total = left + n * width + (n - 1) * gap + right + legend
    fig = Figure(figsize=(total, height))
    axes = fig.subplots(1, n, squeeze=False)[0]
    fig.subplots_adjust(left=left / total, right=(total - right - legend) / total,
                        bottom=bottom / height, top=1 - top / height, wspace=gap / width)
    return fig, list(axes)


def _legend(fig: Figure, table: Table, colour: dict, styles: list[tuple[str, str]] = ()) -> None:
    """One figure legend on the right (in the room :func:`_panels` left for it): metrics, then line styles."""
    handles = []
    for row in table.rows:
        (line,) = fig.axes[0].plot([], [], "-", color=colour[(row.metric, row.metric_id)], linewidth=2.5,
                                   label=text(_short(row.metric)))
        handles.append(line)
    for style, label in styles:
        (line,) = fig.axes[0].plot([], [], style, color="#444", label=label)
        handles.append(line)
    fig.legend(handles=handles, loc="center left", fontsize=8,
               bbox_to_anchor=(1 - (_legend_width(table) - 0.05) / fig.get_figwidth(), 0.5))


_PROLOG = re.compile(r"^.*?(?=<svg\b)", re.S)
_NAMESPACES = re.compile(r'\s+xmlns(:\w+)?="[^"]*"')
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_ID = re.compile(r'\bid="([^"]+)"')
_REF = re.compile(r'(url\(#|href="#)([^")]+)')


def _svg(fig: Figure, prefix: str) -> str:
    """The figure as inline SVG; every id gets ``prefix`` so that several figures share one page."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    svg = _METADATA.sub("", _NAMESPACES.sub("", _PROLOG.sub("", buffer.getvalue(), count=1)))
    ids = set(_ID.findall(svg))
    svg = _ID.sub(lambda m: f'id="{prefix}{m[1]}"', svg)
    svg = _REF.sub(lambda m: m[1] + prefix + m[2] if m[2] in ids else m[0], svg)
    return svg.replace("<svg ", '<svg role="img" ', 1).strip()


__all__ = ["colours", "distance_curves", "score_curves", "text", "tradeoff"]
