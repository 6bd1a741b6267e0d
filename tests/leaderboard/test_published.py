"""Published figures: docs/published.toml agrees with docs/published.md, and a figure sits beside ours only
where the setting matches."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest

from leaderboard import build
from leaderboard.published import PUBLISHED_PATH, load_published, matching
from leaderboard_data import spec, write
from suite.store import ResultStore

MARKDOWN = Path(PUBLISHED_PATH).with_suffix(".md")


def markdown_rows(text: str) -> list[list[str]]:
    """Data rows of every Markdown table: the ``|`` lines after a separator line."""
    rows, in_body = [], False
    for line in text.splitlines():
        if not line.startswith("|"):
            in_body = False
        elif set(line) <= set("|-: "):
            in_body = True
        elif in_body:
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def same(cell: str, value: float) -> bool:
    if math.isnan(value):
        return cell in ("–", "-", "—")
    try:
        return float(cell) == value
    except ValueError:
        return False


def test_every_published_figure_is_in_its_row_of_the_markdown_page():
    data = tomllib.loads(PUBLISHED_PATH.read_text(encoding="utf-8"))
    md_rows = markdown_rows(MARKDOWN.read_text(encoding="utf-8"))
    matched = set()
    for table in data["tables"]:
        for row in table["rows"]:
            scores = row["scores"]
            hits = [i for i, cells in enumerate(md_rows)
                    if cells[0] == row["metric"] and len(cells) > len(scores)
                    and all(same(c, v) for c, v in zip(cells[-len(scores):], scores))
                    and (not row.get("note") or row["note"].split()[-1] in cells)]
            assert hits, f"{row['metric']} {row.get('note', '')} {scores} is not in docs/published.md"
            matched.update(hits)
    assert matched == set(range(len(md_rows))), [md_rows[i] for i in set(range(len(md_rows))) - matched]


def test_published_figures_load_with_their_settings():
    figures = load_published()
    assert len(figures) == 14 + 13 + 24 + 4  # the four tables, DreamSim's three missing BAPPS certificates left out
    mia = [f for f in figures if f.metric == "LipSim" and f.kind == "robust" and f.norm == "linf"]
    assert [(f.eps, f.score) for f in mia] == [(0.01, 62.45), (0.02, 34.38), (0.03, 15.84)]
    certified = [f for f in figures if f.kind == "certified" and f.note == "hinge margin 0.4"]
    assert [round(f.eps * 255) for f in certified] == [36, 72, 108]


def test_a_figure_matches_only_the_same_metric_and_setting():
    figures = load_published()
    natural = matching(figures, kind="natural", dataset="nights", split="test", threat="", norm="", eps=0.0,
                       metric_name="lipsim", metric_options={})
    assert sorted(f.score for f in natural) == [85.1, 86.55, 86.6, 88.5]
    robust = matching(figures, kind="worst", dataset="nights", split="test", threat="ref", norm="l2", eps=0.5,
                      metric_name="lipsim", metric_options={})
    assert [(f.score, f.attack) for f in robust] == [(82.79, "mia")]
    assert matching(figures, kind="worst", dataset="nights", split="test", threat="all", norm="l2", eps=0.5,
                    metric_name="lipsim", metric_options={}) == []
    assert matching(figures, kind="worst", dataset="nights", split="val", threat="ref", norm="l2", eps=0.5,
                    metric_name="lipsim", metric_options={}) == []
    dino = matching(figures, kind="natural", dataset="nights", split="test", threat="", norm="", eps=0.0,
                    metric_name="dreamsim", metric_options={"branch": "dino"})
    assert [f.score for f in dino] == [94.8]


def test_the_page_shows_reported_figures_beside_ours(tmp_path):
    store = ResultStore(tmp_path)
    write(store, spec("lipsim-small", "natural", metric_name="lipsim", metric_options={"weights": "x.pth"}),
          [1.0, 0.5])
    write(store, spec("lipsim-small", "worst", threat="ref", norm="linf", budgets=[4 / 255], metric_name="lipsim",
                      metric_options={"weights": "x.pth"}), [1.0, 0.0])
    page = build(tmp_path)[1].read_text(encoding="utf-8")
    headline = page[page.index('id="headline-1"'):page.index("</table>", page.index('id="headline-1"'))]
    assert "reported 86.55 (LipSim)" in headline and "reported 8.6 (LipSim (pretrained))" in headline
    assert "Published figures for the same settings" in page and "SaTML 2025" in page


@pytest.mark.parametrize("column", ["robust l2 x", "natural l2 1", "bogus"])
def test_a_malformed_published_column_is_a_clear_error(tmp_path, column):
    from suite.errors import SuiteError

    path = tmp_path / "published.toml"
    path.write_text(f'[[tables]]\ncolumns = ["{column}"]\n[[tables.rows]]\nmetric = "m"\nscores = [1.0]\n')
    with pytest.raises(SuiteError):
        load_published(path)
