"""The leaderboard: aggregation numbers by hand, ε formatting, the HTML page and the CLI."""

from __future__ import annotations

import re

import polars as pl

import suite
import pytest

from leaderboard import AGG_SCHEMA, aggregate, build, fmt_eps, read_store, render, text_table
from leaderboard.__main__ import main
from leaderboard_data import EPS_INF, EPS_L2, fill_store as _fill_store, frame, one, rows_for
from suite.errors import SuiteError
from suite.atomic import TMP_PREFIX
from suite.schema import ROW_SCHEMA
from suite.store import ResultStore, cell_key


# aggregation


def test_score_is_mean_in_percent_with_n_and_seconds():
    agg = aggregate(frame(rows_for("lipsim", "natural", [1.0, 0.0, 0.5])))
    entry = one(agg, metric="lipsim")
    assert entry["score"] == pytest.approx(50.0)
    assert entry["n"] == 3 and entry["cells"] == 1
    assert entry["seconds"] == pytest.approx(0.75)
    assert entry["radius_mean"] is None and entry["distance_mean"] is None
    assert agg.schema == pl.Schema(AGG_SCHEMA)


def test_groups_split_by_eps_attack_and_metric_id():
    rows = (rows_for("m", "attack", [1.0, 1.0], attack="pgd", threat="ref", norm="linf", eps=EPS_INF)
            + rows_for("m", "attack", [0.0, 1.0], attack="pgd", threat="ref", norm="linf", eps=2 * EPS_INF)
            + rows_for("m", "attack", [0.0, 0.0], attack="apgd", threat="ref", norm="linf", eps=EPS_INF)
            + rows_for("m", "attack", [0.25, 0.25], attack="pgd", threat="ref", norm="linf", eps=EPS_INF,
                       metric_id="w1"))
    agg = aggregate(frame(rows))
    assert agg.height == 4
    assert one(agg, attack="pgd", eps=EPS_INF, metric_id="w0")["score"] == pytest.approx(100.0)
    assert one(agg, attack="pgd", eps=2 * EPS_INF)["score"] == pytest.approx(50.0)
    assert one(agg, attack="apgd")["score"] == pytest.approx(0.0)
    assert one(agg, metric_id="w1")["score"] == pytest.approx(25.0)


def test_certified_radius_mean_and_median_by_hand():
    rows = rows_for("lipsim", "certified", [1.0, 0.2, 0.8, 0.0], threat="ref", norm="l2", eps=EPS_L2,
                    radius=[0.1, 0.5, 0.3, 2.0])
    entry = one(aggregate(frame(rows)), kind="certified")
    assert entry["score"] == pytest.approx(50.0)
    assert entry["radius_mean"] == pytest.approx(0.725)
    assert entry["radius_median"] == pytest.approx(0.4)


def test_distance_rows_average_reached_distance_and_bound_and_count_violations():
    rows = rows_for("lipsim", "distance", [None, None, None], attack="pgd", threat="all", norm="l2", eps=0.5,
                    reached=[0.1, 0.2, 0.6], bound=[0.3, 0.3, 0.5])
    entry = one(aggregate(frame(rows)), kind="distance")
    assert entry["score"] is None
    assert entry["distance_mean"] == pytest.approx(0.3)
    assert entry["bound_mean"] == pytest.approx(1.1 / 3)
    assert entry["over_bound"] == 1 and entry["over_bound_roundoff"] == 0


def test_distance_rows_without_a_certificate_have_a_null_bound():
    rows = rows_for("lpips", "distance", [None, None], attack="pgd", threat="all", norm="l2", eps=0.5,
                    reached=[0.1, 0.3], bound=[None, None])
    entry = one(aggregate(frame(rows)), kind="distance")
    assert entry["distance_mean"] == pytest.approx(0.2)
    assert entry["bound_mean"] is None and entry["over_bound"] == 0


def test_entries_sorted_natural_first_then_kinds_in_design_order():
    rows = (rows_for("m", "certified", [1.0], threat="ref", norm="l2", eps=EPS_L2, radius=[1.0])
            + rows_for("m", "worst", [1.0], threat="ref", norm="linf", eps=EPS_INF)
            + rows_for("m", "attack", [1.0], attack="pgd", threat="ref", norm="linf", eps=EPS_INF)
            + rows_for("m", "natural", [1.0])
            + rows_for("a", "natural", [1.0]))
    agg = aggregate(frame(rows))
    assert agg.select("metric", "kind").rows() == [
        ("a", "natural"), ("m", "natural"), ("m", "attack"), ("m", "worst"), ("m", "certified")]


def test_seeds_of_one_setting_pool_their_samples():
    rows = rows_for("m", "natural", [1.0], cell="seed0") + rows_for("m", "natural", [0.0, 0.0], cell="seed1")
    entry = one(aggregate(frame(rows)), metric="m")
    assert entry["n"] == 3 and entry["cells"] == 2
    assert entry["score"] == pytest.approx(100 / 3)


def test_aggregate_of_no_rows_is_empty_with_schema():
    agg = aggregate(pl.DataFrame(schema=ROW_SCHEMA))
    assert agg.height == 0 and agg.schema == pl.Schema(AGG_SCHEMA)


def test_aggregate_refuses_frames_that_are_not_store_rows():
    with pytest.raises(SuiteError, match="lack column"):
        aggregate(pl.DataFrame({"metric": ["m"], "score": [1.0]}))


# formatting


@pytest.mark.parametrize("eps, text", [
    (0.0, "0"),
    (8 / 255, "8/255 (0.0314)"),
    (36 / 255, "36/255 (0.1412)"),
    (1 / 255, "1/255 (0.0039)"),
    (8 / 255 + 5e-7, "8/255 (0.0314)"),
    (0.0314, "0.0314"),
    (8 / 255 + 1e-4, "0.03147"),
    (0.5, "0.5"),
    (0.2, "0.2"),
    (1.0, "1"),
])
def test_fmt_eps_shows_k_over_255_when_within_1e_6(eps, text):
    assert fmt_eps(eps) == text


def test_text_table_aggregates_rows_and_prints_percent():
    table = text_table(frame(rows_for("lipsim", "natural", [1.0, 0.0, 0.5])))
    assert "lipsim" in table and "50.00" in table
    assert "radius" not in table  # all-null columns are dropped
    assert text_table(pl.DataFrame(schema=ROW_SCHEMA)) == "(no finished cells)"


# the page


@pytest.fixture(scope="module")
def filled_page(tmp_path_factory) -> str:
    """The page of :func:`leaderboard_data.fill_store`, built once for the tests that only read it."""
    root = tmp_path_factory.mktemp("filled")
    _fill_store(root)
    return build(root)[1].read_text(encoding="utf-8")


def test_build_writes_parquet_and_html_atomically_from_the_store(tmp_path):
    store = _fill_store(tmp_path)
    parquet_path, html_path = build(tmp_path)
    assert parquet_path == tmp_path / "leaderboard.parquet" and html_path == tmp_path / "leaderboard.html"
    view = read_store(tmp_path)
    assert view.rows.height == store.read_all().height
    assert pl.read_parquet(parquet_path).equals(aggregate(view.rows, view.cells))
    for suffix in (".csv", ".json", ".md"):
        assert (tmp_path / f"leaderboard{suffix}").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]
    page = html_path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")


def test_page_escapes_names_and_errors(filled_page):
    page = filled_page
    assert "&lt;b&gt;evil &amp; co&lt;/b&gt;" in page
    assert "<b>evil" not in page
    assert "RuntimeError: &lt;CUDA&gt; out of memory &amp; more" in page
    assert "<CUDA>" not in page


def test_page_is_self_contained(filled_page):
    page = filled_page
    # one inline script (column sorting) and nothing that loads from anywhere
    assert page.count("<script") == 1 and "<script>" in page and " src=" not in page
    assert "http://" not in page and "https://" not in page
    assert "<style>" in page and "<svg" in page


def test_page_shows_worst_case_as_headline_and_ranks_by_it(filled_page):
    page = filled_page
    assert '<th class="headline" data-type="num">worst case<span class="sub">ℓ∞ ε=8/255 (0.0314)</span>' in page
    assert 'certified<span class="sub">ℓ2 ε=36/255 (0.1412)</span>' in page
    # lipsim is more robust (75.00 worst case) than the evil metric (0.00), though less accurate
    assert page.index("<b>lipsim</b>") < page.index("<b>&lt;b&gt;evil")
    headline = page[page.index('id="headline-1"'):]
    lipsim_row = headline[headline.index("<b>lipsim</b>"):]
    lipsim_row = lipsim_row[:lipsim_row.index("</tr>")]
    worst = re.search(r'<td class="num headline best" data-sort="[^"]*" title="([^"]*)"><span class="v">75.00</span>',
                      lipsim_row)
    assert worst and "n=2 samples in 1 cell(s)" in worst.group(1)
    assert "Ranked by the worst-case score at ℓ∞ ε=8/255 (0.0314), threat ref." in page
    assert "median radius 0.250" in page


def test_page_columns_start_with_natural_and_mark_missing_entries(tmp_path):
    store = _fill_store(tmp_path)
    spec = {"metric": "lpips", "kind": "natural"}
    key = cell_key(spec)
    store.write(key, spec, rows_for("lpips", "natural", [0.5, 0.5], cell=key))
    page = build(tmp_path)[1].read_text(encoding="utf-8")
    header = page[page.index("<thead>"):page.index("</thead>")]
    assert header.index("natural") < header.index("worst case") < header.index("certified")
    details = page[page.index("threat ref · ℓ∞</h4>"):]
    header = details[details.index("<thead>"):details.index("</thead>")]
    assert header.index("natural") < header.index("worst case") < header.index("pgd")

    def lpips_row(text):
        row = text[text.index("<b>lpips</b>"):]
        return row[:row.index("</tr>")]

    assert lpips_row(page).count('class="na') == 2  # headline: worst case and certified
    assert lpips_row(page).count(">—</td>") == 3  # and no rank: lpips has no worst-case score to rank by
    assert lpips_row(details).count(">—</td>") == 2  # ℓ∞ details: worst case and pgd


def test_page_lists_failed_cells_and_footer(filled_page):
    page = filled_page
    assert "Failed cells (1)" in page
    assert "&quot;metric&quot;: &quot;dreamsim&quot;" in page
    assert f"lipsim-suite {suite.__version__}" in page and "python -m leaderboard RESULTS_DIR" in page
    assert "16 per-sample rows in 8 finished cell(s)" in page
    assert "6 evaluated cell(s) done and 2 worst-case cell(s) derived from them; 1 failed; 0 not evaluated" in page


def test_page_of_an_empty_store(tmp_path):
    ResultStore(tmp_path)
    page = build(tmp_path)[1].read_text(encoding="utf-8")
    assert "No finished cells yet" in page and "None: every cell in the store finished." in page


def test_render_is_a_pure_function_of_entries_and_failures():
    agg = aggregate(frame(rows_for("m", "natural", [1.0, 0.0])))
    first = render(agg, [], generated_at="T", generator="9.9")
    assert first == render(agg, [], generated_at="T", generator="9.9")
    assert "50.00" in first and "lipsim-suite 9.9" in first


# the command


def test_main_prints_paths_and_table(tmp_path, capsys):
    _fill_store(tmp_path)
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'leaderboard.html'}" in out
    assert "lipsim" in out and "75.00" in out and "8/255 (0.0314)" in out


def test_main_and_lipsim_leaderboard_write_where_out_says(tmp_path, capsys):
    from jobs.cli import main as lipsim

    _fill_store(tmp_path / "results")
    assert main([str(tmp_path / "results"), "--out", str(tmp_path / "a" / "board.html")]) == 0
    assert lipsim(["leaderboard", str(tmp_path / "results"), "--out", str(tmp_path / "b.html")]) == 0
    for page in (tmp_path / "a" / "board.html", tmp_path / "b.html"):
        for suffix in (".html", ".parquet", ".csv", ".json", ".md"):
            assert page.with_suffix(suffix).is_file()
    assert not (tmp_path / "results" / "leaderboard.html").exists()
    assert "75.00" in capsys.readouterr().out


def test_out_must_name_an_html_file(tmp_path, capsys):
    _fill_store(tmp_path)
    assert main([str(tmp_path), "--out", str(tmp_path / "board.parquet")]) == 2
    assert ".html" in capsys.readouterr().err


def test_main_on_a_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err



def test_tightness_is_the_median_ratio_of_certified_to_minimal_adversarial_radius():
    rows = (rows_for("lipsim", "certified", [1.0, 1.0, 1.0, 1.0], threat="ref", norm="l2", eps=0.5,
                     radius=[0.1, 0.4, 0.3, 0.2])
            + rows_for("lipsim", "certified", [1.0, 1.0, 1.0, 1.0], attack="smoothing", threat="ref", norm="l2",
                       eps=0.5, radius=[9.0, 9.0, 9.0, 9.0])  # another function's certificate: ignored
            + rows_for("lipsim", "minnorm", [None] * 4, attack="minnorm", threat="ref", norm="l2", eps=10.0,
                       radius=[0.2, 0.5, 0.6, float("inf")]))
    entry = one(aggregate(frame(rows)), kind="minnorm")
    assert entry["tightness"] == pytest.approx(0.5)  # ratios 0.5, 0.8, 0.5 (∞ left out): median 0.5
    assert entry["flipped"] == 3
    assert one(aggregate(frame(rows)), kind="certified", attack="")["tightness"] is None
