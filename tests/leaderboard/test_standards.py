"""Which attack settings are non-standard: read from the attacks' signatures, judged on effort only."""

from __future__ import annotations

import pytest

from leaderboard.standards import reference, setting, weaker_than


def test_autoattack_reference_is_the_original_setting_from_its_signature():
    assert reference("autoattack") == {"attacks": ["apgd-ce", "square"], "n_iter": 100, "n_queries": 5000,
                                       "restarts": 1}


@pytest.mark.parametrize("name, options, standard, reasons", [
    ("autoattack", {}, True, ()),
    ("aa", {"n_iter": 5, "n_queries": 25}, False, ("n_iter 5 < 100", "n_queries 25 < 5000")),
    ("autoattack", {"attacks": ["square"]}, False, ("attacks lacks apgd-ce",)),
    ("pgd", {}, False, ("steps 20 < 100",)),  # the signature's 20 steps are the demo setting, not paper grade
    ("pgd", {"steps": 100}, True, ()),
    ("pgd", {"steps": 200, "random_start": False}, False, ("random_start=false (reference: true)",)),
    ("mia", {}, True, ()),
    ("mia", {"steps": 5, "decay": 0.5}, False, ("steps 5 < 10",)),  # momentum is a choice, not effort
    ("distance", {"steps": 10}, False, ("steps 10 < 20",)),
])
def test_effort_below_the_reference_is_non_standard(name, options, standard, reasons):
    found = setting(name, options)
    assert found.standard is standard and found.weaker == reasons


def test_options_are_keyed_with_defaults_filled_and_shown_as_changed():
    assert setting("pgd", {}).key() == setting("pgd", {"steps": 20}).key() != setting("pgd", {"steps": 10}).key()
    assert setting("aa", {"n_iter": 5}).changed == {"n_iter": 5}
    assert setting("pgd", {"eps": 0.5, "norm": "l2", "seed": 3}).changed == {}  # cell-level, not the attack's


def test_an_attack_the_registry_does_not_know_is_not_judged():
    found = setting("not-an-attack", {"steps": 1})
    assert found.standard is None and found.options == {"steps": 1} and not found.known


def test_time_saving_switches_are_not_effort():
    assert weaker_than({"early_stop": False, "steps": 5}, {"early_stop": True, "steps": 5}) == []
