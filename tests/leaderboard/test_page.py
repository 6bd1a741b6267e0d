"""The page and its companions built from a complete store: escaping of every text that comes from results,
banners, figures, provenance, honest bounds, counts, and the Markdown / JSON / CSV files."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import polars as pl
import pytest

from leaderboard import AGG_SCHEMA, build, read_store
from leaderboard_data import HOSTILE, fill_store, rows_for, showcase_store, spec, training_folder, write
from suite.store import ResultStore


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One showcase store built once for this module: ``(results folder, page text)``."""
    root = tmp_path_factory.mktemp("showcase")
    store = showcase_store(root / "results", weights_dir=training_folder(root / "weights"))
    hostile_split = spec("ok", "natural", split='<img src=x onerror=alert("split")>', dataset="nights")
    write(store, hostile_split, [1.0, 0.0])
    _, html = build(root / "results")
    return root / "results", html.read_text(encoding="utf-8")


class Tags(HTMLParser):
    """Every start tag of a page and every event-handler attribute (``on…``) on any of them."""

    def __init__(self, page: str):
        super().__init__()
        self.tags, self.handlers = [], []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.handlers += [name for name, _ in attrs if name.startswith("on")]


def test_text_from_results_renders_as_text(built):
    _, page = built
    parsed = Tags(page)
    assert parsed.tags.count("script") == 1  # ours, the sorting script; the label's script tag is text
    assert "img" not in parsed.tags and parsed.handlers == []
    assert "&lt;script&gt;alert(&quot;label&quot;)&lt;/script&gt;" in page  # the metric label, in tables
    assert "&lt;script&gt;alert(" in page[page.index("<svg"):]  # and inside the figures' legends
    assert "&lt;img src=x onerror=alert(&quot;split&quot;)&gt;" in page  # a split name
    assert "RuntimeError: &lt;img src=x onerror=alert(&#x27;error&#x27;)&gt; went wrong" in page  # an error
    assert "weights not found: &lt;img src=y onerror=alert(&#x27;reason&#x27;)&gt;" in page  # a reason


def test_companions_escape_too(built):
    root, _ = built
    md = (root / "leaderboard.md").read_text(encoding="utf-8")
    assert "<script" not in md and "<img" not in md and "&lt;script&gt;" in md
    data = json.loads((root / "leaderboard.json").read_text(encoding="utf-8"))
    assert HOSTILE in {e["metric"] for e in data["entries"]}  # data stays data in JSON


def test_smoke_data_says_it_is_a_smoke_test(built):
    _, page = built
    assert "Smoke test, not a perceptual benchmark." in page and "do not cite them" in page


def test_figures_are_inline_svg_with_unique_ids(built):
    _, page = built
    assert page.count("<svg") == 3  # the showcase's score curves, trade-off and distances (the other split: none)
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))


def test_headline_has_sticky_metric_column_rank_intervals_and_best_values(built):
    _, page = built
    start = page.index('id="headline-2"')  # synthetic-2afc sorts after nights
    table = page[start:page.index("</table>", start)]
    assert '<th class="sticky" data-type="text" data-first="asc">metric</th>' in table
    assert ">rank</th>" in table and table.count('class="ci"') > 10
    assert re.search(r'<td class="num[^"]* best"', table)
    assert "threat ref" in page and "Ranked by mean rank over the 6 worst-case columns" in page


def test_non_standard_attacks_are_flagged_with_their_options(built):
    _, page = built
    assert "non-standard</span>" in page and "n_iter=5" in page and "steps=10" in page
    assert "n_iter 5 &lt; 100" in page and "steps 10 &lt; 100" in page


def test_provenance_shows_weights_recipe_options_and_build(built):
    _, page = built
    provenance = page[page.index('id="provenance"'):]
    assert "weights " in provenance and "recipe " in provenance and "epochs=2" in provenance
    assert "2 epoch(s) logged" in provenance and "best 0.8500" in provenance
    assert "no learned weights (closed-form metric)" in provenance
    assert "count=4" in provenance and "fp0" in provenance  # dataset options and fingerprint
    assert "git commit" in provenance


def test_round_off_above_a_bound_is_not_over_the_bound(built):
    _, page = built
    assert 'class="sub warn"' not in page and "exceed their certified bound" not in page
    assert "above their bound by float round-off only" in page


def test_a_real_excess_over_the_bound_is_red(tmp_path):
    store = ResultStore(tmp_path)
    write(store, spec("m", "distance", attack="distance", threat="ref", norm="l2", budgets=[0.5]), [None, None],
          reached=[0.5, 0.6], bound=[0.5, 0.5])
    page = build(tmp_path)[1].read_text(encoding="utf-8")
    assert '<span class="sub warn">1 over the bound</span>' in page
    assert "1 distance sample(s) exceed their certified bound" in page


def test_random_weights_are_said_loudly(tmp_path):
    store = ResultStore(tmp_path)
    write(store, spec("dino (random weights)", "natural"), [1.0, 0.0])
    write(store, spec("clip", "natural", metric_options={"pretrained": False}, metric_id="w1"), [1.0, 0.0])
    write(store, spec("lipsim", "natural", metric_id="w2"), [1.0, 0.0])
    page = build(tmp_path)[1].read_text(encoding="utf-8")
    assert page.count('class="badge random">random weights</span>') == 3
    assert "Random weights:</b> clip, dino (random weights), lipsim ran with untrained networks" in page
    assert "RANDOM WEIGHTS" in page


def test_footer_counts_come_from_the_store(tmp_path):
    fill_store(tmp_path)
    page = build(tmp_path)[1].read_text(encoding="utf-8")
    assert ("16 per-sample rows in 8 finished cell(s) of the result store (6 evaluated cell(s) done and 2 "
            "worst-case cell(s) derived from them; 1 failed; 0 not evaluated)") in page


def test_a_cell_that_does_not_verify_is_listed_not_aggregated(tmp_path):
    store = fill_store(tmp_path)
    key = store.keys()[0]
    store.parquet_path(key).write_bytes(b"not a parquet file")
    view = read_store(tmp_path)
    assert view.counts["missing"] == 1 and view.counts["rows"] == 14
    page = build(tmp_path)[1].read_text(encoding="utf-8")
    if view.damaged:  # a store that checks its files says what is wrong with the cell
        assert "Cells that do not verify (1)" in page and key in page
    assert "1 missing (interrupted or not verifying)" in page


def test_companions_hold_the_same_entries(built):
    root, _ = built
    parquet = pl.read_parquet(root / "leaderboard.parquet")
    assert parquet.schema == pl.Schema(AGG_SCHEMA)
    csv = pl.read_csv(root / "leaderboard.csv")
    assert csv.columns == list(AGG_SCHEMA) and csv.height == parquet.height
    data = json.loads((root / "leaderboard.json").read_text(encoding="utf-8"))
    assert len(data["entries"]) == parquet.height
    assert data["counts"]["failed"] == 1 and data["counts"]["not_evaluated"] == 1
    assert {a["attack"] for a in data["attacks"]} == {"autoattack", "distance", "pgd"}
    md = (root / "leaderboard.md").read_text(encoding="utf-8")
    assert "| rank | metric | natural | worst ℓ2 0.25 |" in md and "includes non-standard attacks" in md


def test_markdown_of_hand_made_rows():
    from leaderboard import aggregate, markdown
    from leaderboard_data import frame

    rows = rows_for("a|b", "natural", [1.0, 0.5]) + rows_for("a|b", "worst", [1.0, 0.0], threat="ref", norm="l2",
                                                             eps=0.5)
    md = markdown(aggregate(frame(rows)))
    assert "| 1 | a\\|b | 75.00 (50.0–100.0) | 50.00 (0.0–100.0) | 2 |" in md


def test_the_leaderboard_command_warns_about_each_cell_that_does_not_verify(tmp_path, capsys):
    from jobs.cli import main as cli

    store = fill_store(tmp_path)
    key = store.keys()[0]
    store.parquet_path(key).write_bytes(b"not a parquet file")
    assert cli(["leaderboard", str(tmp_path)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(err) == 1 and err[0].startswith(f"warning: damaged cell {key} (") and "left out of the page" in err[0]
    store.write(key, json.loads(store.json_path(key).read_text())["spec"], [])  # repaired (no rows): no warning
    assert cli(["leaderboard", str(tmp_path)]) == 0
    assert "warning" not in capsys.readouterr().err
