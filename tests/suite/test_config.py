from pathlib import Path

import pytest

from suite.config import load_config, parse_config, parse_eps
from suite.errors import SuiteError

BASE = {
    "metrics": [{"name": "l2"}],
    "datasets": [{"name": "synthetic-2afc", "splits": ["test"]}],
    "evaluations": [{"kind": "natural"}, {"kind": "attack", "attack": "pgd", "eps": {"l2": [0.5, "36/255"]}}],
}


def test_fractions_parse_as_budgets():
    assert parse_eps("36/255", "x") == pytest.approx(36 / 255)


@pytest.mark.parametrize("bad", [-0.1, "abc", "1/0", float("nan")])
def test_bad_budgets_are_rejected(bad):
    with pytest.raises(SuiteError, match="ε"):
        parse_eps(bad, "x")


def test_valid_config_becomes_typed_objects(tmp_path):
    cfg = parse_config(BASE, base_dir=tmp_path)
    assert cfg.metrics[0].label == "l2"
    assert cfg.evaluations[1].eps["l2"] == pytest.approx((0.5, 36 / 255))
    assert cfg.results_dir == tmp_path / "results" / "run"


def test_negative_eps_in_config_names_the_table():
    bad = {**BASE, "evaluations": [{"kind": "attack", "attack": "pgd", "eps": {"l2": [-1]}}]}
    with pytest.raises(SuiteError, match=r"\[\[evaluations\]\] #1 eps.l2"):
        parse_config(bad)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"evaluations": [{"kind": "attak"}]}, "kind must be one of"),
        ({"metrics": []}, "no \\[\\[metrics\\]\\]"),
        ({"evaluations": [{"kind": "certified", "eps": {"linf": [0.1]}}]}, "ℓ2 only"),
        ({"evaluations": [{"kind": "attack", "eps": {"l2": [1]}}]}, "needs attack"),
        ({"datasets": [{"name": "x", "limit": 0}]}, "integer ≥ 1"),
        ({"metrics": [{"name": "l2"}, {"name": "l2"}]}, "unique"),
        ({"run": {"batch_size": 0}}, "batch_size"),
        ({"extra": 1}, "unknown key"),
    ],
)
def test_invalid_configs_fail_with_one_clear_line(change, message):
    with pytest.raises(SuiteError, match=message) as info:
        parse_config({**BASE, **change})
    assert "\n" not in str(info.value)


def test_malformed_toml_and_missing_file(tmp_path):
    with pytest.raises(SuiteError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\nname=1")
    with pytest.raises(SuiteError, match="not valid TOML"):
        load_config(bad)


def test_data_root_fills_nights_and_bapps_roots(tmp_path):
    data = {**BASE, "datasets": [{"name": "nights"}, {"name": "synthetic-2afc"}]}
    cfg = parse_config(data, data_root="/data/nights")
    assert cfg.datasets[0].options["root"] == "/data/nights"
    assert "root" not in cfg.datasets[1].options


def test_every_shipped_config_parses():
    """The configs in configs/ are read by the same validation a run uses (data roots given where needed)."""
    root = Path(__file__).resolve().parents[2] / "configs"
    configs = sorted(root.glob("*.toml"))
    assert len(configs) >= 7
    for path in configs:
        config = load_config(path, data_root="/data")
        assert config.metrics and config.datasets and config.evaluations, path.name
    copydays = load_config(root / "copydays.toml", data_root="/data/copydays")
    assert copydays.datasets[0].options["root"] == "/data/copydays"
