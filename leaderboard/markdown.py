"""The headline tables as Markdown, ready for a paper or a README (``leaderboard.md``)."""

from __future__ import annotations

import polars as pl

from leaderboard.formatting import fmt_num
from leaderboard.headline import headline_tables
from leaderboard.intervals import LEVEL
from leaderboard.retrieval import RetrievalTable, retrieval_tables


def markdown(agg: pl.DataFrame, *, generated_at: str = "", generator: str = "",
             retrieval: pl.DataFrame | None = None) -> str:
    """One Markdown table per (dataset, split): rank, metric, natural, worst case and certified (threat
    ``ref``) with their 95% intervals, n; ``†`` marks a non-standard evaluation, explained below the table.
    ``retrieval``: :func:`leaderboard.retrieval.retrieval_entries`; when it holds entries, a "Copy detection"
    section follows with one table per (dataset, split), as on the page."""
    copies = _copy_detection(retrieval_tables(retrieval))
    out = ["# LipSim robustness suite: leaderboard", ""]
    if generated_at or generator:
        out += [f"Generated {generated_at} by lipsim-suite {generator} from the result store; never edited by hand.",
                ""]
    out += [f"2AFC scores in percent with their {int(LEVEL * 100)}% interval (bootstrap over samples). Worst case: "
            "per-sample minimum over every attack at that budget; certified: counted only where the certified radius "
            "exceeds ε. Threat model `ref` (only the reference image is perturbed).", ""]
    tables = headline_tables(agg)
    if not tables and not copies:
        return "\n".join(out + ["No finished cells yet.", ""])
    for table in tables:
        out += [f"## {_md(table.title())}", ""]
        if table.smoke:
            out += ["**Smoke test, not a perceptual benchmark:** synthetic triplets; do not cite these figures.", ""]
        header = ["rank", "metric", *(c.text_label() for c in table.columns), "n"]
        out.append("| " + " | ".join(_md(h) for h in header) + " |")
        out.append("| " + " | ".join("---:" if h not in ("metric",) else "---" for h in header) + " |")
        notes: dict[str, int] = {}
        for row in table.rows:
            cells = [str(row.rank or "—"), _md(row.metric)]
            for column in table.columns:
                entry = row.entries.get(column)
                if entry is None or entry["score"] is None:
                    cells.append("—")
                    continue
                text = fmt_num(entry["score"], 2)
                if entry["ci_low"] is not None:
                    text += f" ({fmt_num(entry['ci_low'], 1)}–{fmt_num(entry['ci_high'], 1)})"
                if entry["nonstandard"]:
                    mark = notes.setdefault(entry["nonstandard"], len(notes) + 1)
                    text += "†" * mark if mark <= 3 else f"†{mark}"
                cells.append(text)
            cells.append(str(row.n or "—"))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        out.append(_md(table.ranked_by()))
        for why, mark in notes.items():
            out.append("")
            out.append(f"{'†' * mark if mark <= 3 else f'†{mark}'} includes non-standard attacks: {_md(why)}")
        out.append("")
    return "\n".join(out + copies)


def _copy_detection(tables: list[RetrievalTable]) -> list[str]:
    """The "Copy detection" section's lines: per (dataset, split) its explanation and a table of metric,
    recall@1, mAP, micro-AP, then per budget recall@1 under evasion, collision resistance and certified
    recall@1 (percent, 95% interval in brackets), n; no lines without tables."""
    if not tables:
        return []
    out = ["## Copy detection", ""]
    for table in tables:
        out += [f"### {_md(table.title())}", "", table.explain(), ""]
        if table.smoke:
            out += ["**Smoke test, not a copy-detection benchmark:** synthetic copies; do not cite these figures.",
                    ""]
        header = ["metric", *(c.text_label() for c in table.columns), "n"]
        out.append("| " + " | ".join(_md(h) for h in header) + " |")
        out.append("| " + " | ".join("---" if h == "metric" else "---:" for h in header) + " |")
        for row in table.rows:
            cells = [_md(row.metric)]
            for column in table.columns:
                entry = row.entries.get(column)
                if entry is None or entry["value"] is None:
                    cells.append("—")
                    continue
                text = fmt_num(entry["value"], 2)
                if entry["ci_low"] is not None:
                    text += f" ({fmt_num(entry['ci_low'], 1)}–{fmt_num(entry['ci_high'], 1)})"
                cells.append(text)
            cells.append(str(row.n or "—"))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return out


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell (pipes and HTML are escaped)."""
    return (str(text).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\n", " "))


__all__ = ["markdown"]
