"""The copy-detection section: retrieval rows make their own table (page, Markdown, JSON, CSV) and never
change a 2AFC number. Values below are computed by hand from :func:`leaderboard_data.add_retrieval`."""

from __future__ import annotations

import io
import json

import polars as pl
import pytest

from leaderboard import aggregate, build, markdown, read_store, retrieval_entries, split_tasks
from leaderboard.retrieval import RETRIEVAL_SCHEMA, micro_average_precision, retrieval_tables
from leaderboard_data import COPY_EPS, add_retrieval, fill_store, frame, one, retrieval_rows, rows_for
from suite.store import ResultStore


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    """A store with only the copy-detection cells: ``(results folder, page, retrieval entries)``."""
    root = tmp_path_factory.mktemp("copies")
    add_retrieval(ResultStore(root))
    page = build(root)[1].read_text(encoding="utf-8")
    view = read_store(root)
    return root, page, retrieval_entries(view.rows, view.cells)


def _value(entries: pl.DataFrame, **where) -> float:
    return one(entries, **where)["value"]


# the tasks apart


def test_split_tasks_treats_missing_and_null_task_as_2afc():
    rows = frame(rows_for("m", "natural", [1.0, 0.0]) + retrieval_rows("m", "natural", [1.0]))
    rows = rows.with_columns(task=pl.Series(["2afc", None, "retrieval"]))
    twoafc, retrieval = split_tasks(rows)
    assert twoafc["task"].to_list() == ["2afc", None] and retrieval["task"].to_list() == ["retrieval"]
    old = rows.drop("task", "ap").head(2)  # a store written before retrieval existed: no task column at all
    twoafc, retrieval = split_tasks(old)
    assert twoafc.equals(old) and retrieval.is_empty()
    assert one(aggregate(old), metric="m")["score"] == pytest.approx(50.0)


def test_aggregate_ignores_retrieval_rows():
    twoafc = rows_for("m", "natural", [1.0, 0.0], dataset="nights")
    mixed = twoafc + retrieval_rows("m", "natural", [1.0, 1.0, 1.0], dataset="nights", split="test")
    assert aggregate(frame(mixed)).equals(aggregate(frame(twoafc)))


def test_adding_retrieval_rows_changes_no_2afc_number(tmp_path):
    store = fill_store(tmp_path)
    names = ("leaderboard.html", "leaderboard.md", "leaderboard.json", "leaderboard.csv", "leaderboard.parquet")
    before = {name: (tmp_path / name) for name in names}
    build(tmp_path)
    old = {name: path.read_bytes() for name, path in before.items()}
    add_retrieval(store)
    build(tmp_path)
    new = {name: path.read_bytes() for name, path in before.items()}
    assert pl.read_parquet(tmp_path / "leaderboard.parquet").equals(pl.read_parquet(io.BytesIO(
        old["leaderboard.parquet"])))
    assert new["leaderboard.csv"] == old["leaderboard.csv"]
    pages = [old["leaderboard.html"].decode(), new["leaderboard.html"].decode()]
    start = '<section id="table-1">'
    sections = [p[p.index(start):p.index("</section>", p.index(start))] for p in pages]
    assert sections[0] == sections[1]  # the 2AFC table, its figures and details: the same text
    assert "Copy detection" not in pages[0] and "Copy detection" in pages[1]
    mds = [old["leaderboard.md"].decode(), new["leaderboard.md"].decode()]
    body = [md[md.index("## nights"):] for md in mds]
    assert body[1].startswith(body[0].rstrip("\n")) and "## Copy detection" in body[1]
    data = [json.loads(old["leaderboard.json"]), json.loads(new["leaderboard.json"])]
    assert data[0]["entries"] == data[1]["entries"]
    assert data[0]["retrieval"] == [] and len(data[1]["retrieval"]) == 11


# the numbers


def test_natural_recall_map_and_micro_ap_by_hand(copies):
    _, _, entries = copies
    assert entries.schema == pl.Schema(RETRIEVAL_SCHEMA)
    assert _value(entries, metric="lipsim", measure="recall@1") == pytest.approx(75.0)
    assert _value(entries, metric="lipsim", measure="mAP") == pytest.approx(68.75)  # (1 + 1 + .5 + .25) / 4
    assert _value(entries, metric="dino", measure="recall@1") == pytest.approx(25.0)
    dino_map = one(entries, metric="dino", measure="mAP")
    assert dino_map["value"] == pytest.approx(100 * 1.7 / 3) and dino_map["n"] == 3  # q2: no match, no AP
    # lipsim: top-1 distances .1 .2 .3 (right) .45 (wrong), 4 queries with a match: (1 + 1 + 1) / 4
    assert _value(entries, metric="lipsim", measure="micro-AP") == pytest.approx(75.0)
    # dino: .2 right, then .3 (q2, no match) .35 .45 wrong; 3 with a match: 1 / 3
    assert _value(entries, metric="dino", measure="micro-AP") == pytest.approx(100 / 3)
    assert one(entries, metric="dino", measure="micro-AP")["ci_low"] is None
    recall = one(entries, metric="lipsim", measure="recall@1")
    assert recall["ci_low"] <= 75.0 <= recall["ci_high"]  # the 2AFC tables' bootstrap interval


def test_micro_average_precision_hand_case():
    # top-1 distances .1 (right) .4 (wrong) .25 (q2: no true match, wrong) .3 (right); 3 queries with a match
    # pooled by distance: right, wrong, right, wrong → (1/1 + 2/3) / 3
    d0, d1, correct = [0.1, 0.5, None, 0.3], [0.2, 0.4, 0.25, 0.6], [1.0, 0.0, 0.0, 1.0]
    assert micro_average_precision(d0, d1, correct) == pytest.approx(5 / 9)
    assert micro_average_precision([0.2, None], [0.5, 0.2], [1.0, 0.0]) == pytest.approx(0.5)  # a tie never helps
    assert micro_average_precision([None], [0.3], [0.0]) is None  # no query with a true match
    assert micro_average_precision([0.1, 0.2], [0.3, 0.4], [1.0, 1.0]) == pytest.approx(1.0)


def test_micro_average_precision_agrees_with_the_suite():
    from suite.retrieval import micro_average_precision as suite_micro_ap

    # confidences −min(d0, d1) of the hand case above, most confident first: −.1 −.25 −.3 −.4
    theirs = suite_micro_ap([-0.1, -0.4, -0.25, -0.3], [True, False, False, True], 3)
    ours = micro_average_precision([0.1, 0.5, None, 0.3], [0.2, 0.4, 0.25, 0.6], [1.0, 0.0, 0.0, 1.0])
    assert theirs == pytest.approx(5 / 9) and ours == pytest.approx(theirs)


def test_evasion_uses_worst_rows_where_the_store_has_them(copies):
    _, _, entries = copies
    lipsim = one(entries, metric="lipsim", measure="evasion", norm="l2", eps=COPY_EPS)
    assert lipsim["kind"] == "worst" and lipsim["value"] == pytest.approx(25.0)  # attack rows alone: 50
    dino = one(entries, metric="dino", measure="evasion", norm="l2", eps=COPY_EPS)
    assert dino["kind"] == "attack" and dino["value"] == pytest.approx(0.0)


def test_collision_resistance_is_the_share_of_pairs_resisted(copies):
    _, _, entries = copies
    assert _value(entries, metric="lipsim", measure="collision", eps=COPY_EPS) == pytest.approx(75.0)
    assert entries.filter((pl.col("metric") == "dino") & (pl.col("measure") == "collision")).is_empty()


def test_certified_column_only_for_the_certified_metric(copies):
    _, page, entries = copies
    assert _value(entries, metric="lipsim", measure="certified", eps=COPY_EPS) == pytest.approx(25.0)
    (table,) = retrieval_tables(entries)
    certified = [c for c in table.columns if c.measure == "certified"]
    assert [(c.norm, c.eps) for c in certified] == [("l2", COPY_EPS)]  # ε 0 certifies nothing: no column
    rows = {r.metric: r for r in table.rows}
    assert certified[0] in rows["lipsim"].entries and certified[0] not in rows["dino"].entries
    dino = page[page.index("<b>dino</b>"):]
    dino = dino[:dino.index("</tr>")]
    assert dino.count('<td class="na">—</td>') == 2  # collision and certified


def test_page_section_columns_and_explanation(copies):
    _, page, _ = copies
    section = page[page.index('<section id="copy-detection">'):]
    section = section[:section.index("</section>")]
    head = section[section.index("<thead>"):section.index("</thead>")]
    order = ["recall@1</th>", "mAP</th>", "micro-AP</th>", "recall@1 under evasion<span class=\"sub\">ℓ2 0.5",
             "collision resistance<span class=\"sub\">ℓ2 0.5", "certified recall@1<span class=\"sub\">ℓ2 0.5"]
    assert [head.index(h) for h in order] == sorted(head.index(h) for h in order)
    assert "edited copy" in section and "hyperplane" in section and "every distractor" in section
    assert "157 originals" in section and "229" in section and "10k distractor" in section  # copydays protocol
    assert section.index("<b>lipsim</b>") < section.index("<b>dino</b>")  # by natural recall@1
    assert 'href="#copy-detection"' in page and "No finished cells yet" not in page


def test_copydays_protocol_only_for_copydays():
    rows = retrieval_rows("m", "natural", [1.0, 0.0], ap=[1.0, 0.5], dataset="disc21", split="dev")
    (table,) = retrieval_tables(retrieval_entries(frame(rows)))
    assert "hyperplane" in table.explain() and "157 originals" not in table.explain()


def test_no_section_without_retrieval_rows(tmp_path):
    fill_store(tmp_path)
    _, html = build(tmp_path)
    page = html.read_text(encoding="utf-8")
    assert "copy-detection" not in page and "Copy detection" not in page
    assert "Copy detection" not in (tmp_path / "leaderboard.md").read_text(encoding="utf-8")
    assert not (tmp_path / "leaderboard.retrieval.csv").exists()
    assert retrieval_entries(read_store(tmp_path).rows).is_empty()
    assert markdown(aggregate(read_store(tmp_path).rows), retrieval=None).count("## ") == 1


def test_markdown_json_and_csv_companions_hold_the_table(copies):
    root, _, entries = copies
    md = (root / "leaderboard.md").read_text(encoding="utf-8")
    assert "## Copy detection" in md and "### copydays · strong" in md and "No finished cells yet" not in md
    assert ("| metric | recall@1 | mAP | micro-AP | evasion ℓ2 0.5 | collision ℓ2 0.5 | cert. ℓ2 0.5 | n |"
            in md)
    assert "| lipsim | 75.00 (" in md and "| 68.75 (" in md and "| 75.00 | 25.00 (" in md
    dino = next(line for line in md.splitlines() if line.startswith("| dino |"))
    assert dino.endswith("| — | — | 4 |")
    csv = pl.read_csv(root / "leaderboard.retrieval.csv")
    assert csv.columns == list(RETRIEVAL_SCHEMA) and csv.height == entries.height == 11
    data = json.loads((root / "leaderboard.json").read_text(encoding="utf-8"))
    assert data["entries"] == [] and len(data["retrieval"]) == entries.height
    got = {(e["metric"], e["measure"], e["eps"]): e["value"] for e in data["retrieval"]}
    assert got[("lipsim", "evasion", COPY_EPS)] == pytest.approx(25.0)
    assert got[("dino", "micro-AP", 0.0)] == pytest.approx(100 / 3)
