import pytest
import torch

import attacks
from attacks.objective import MostDamaging, TwoAFCObjective
from suite.errors import SuiteError, UnknownNameError
from suite.registry import ATTACKS, DISTANCE_ATTACKS


def test_builtins_are_registered_and_load_sets_the_name():
    assert {"pgd", "mia", "autoattack", "minnorm"} <= set(ATTACKS.names())
    assert "distance" in DISTANCE_ATTACKS.names() and attacks.load_distance("distance").name == "distance"
    assert attacks.load("aa", n_iter=3).name == "autoattack"
    assert attacks.load("MI-FGSM").name == "mia"


@pytest.mark.parametrize("name", ["pgd", "mia", "distance", "autoattack", "minnorm"])
def test_common_options_are_validated(name):
    load = attacks.load_distance if name == "distance" else attacks.load
    with pytest.raises(SuiteError, match="eps must be a finite number ≥ 0"):
        load(name, eps=-0.1)
    with pytest.raises(SuiteError, match="norm must be one of l2, linf; got 'l1'"):
        load(name, norm="l1")
    if name != "distance":  # a distance attack moves one image: it has no threat option
        with pytest.raises(SuiteError, match="threat must be one of"):
            load(name, threat="candidates")
    with pytest.raises(SuiteError, match="bad options"):
        load(name, stepz=3)


def test_unknown_attack_suggests_close_names():
    with pytest.raises(UnknownNameError, match="did you mean pgd"):
        attacks.load("pgdd")


def test_most_damaging_prefers_lower_score_then_higher_margin():
    judge = torch.tensor([0.8, 0.8, 0.5, 0.2])
    clean = [torch.zeros(4, 1)]
    best = MostDamaging(clean, torch.tensor([2.0, 2.0, 1.0, 1.0]), torch.tensor([1.0, 1.0, 2.0, 2.0]), judge)
    # sample 0: flips (lower score); 1: same decision, larger margin; 2: j = ½; 3: smaller margin
    best.update([torch.ones(4, 1)], torch.tensor([1.0, 2.0, 5.0, 0.5]), torch.tensor([2.0, 1.5, 0.0, 2.0]))
    assert best.images[0].flatten().tolist() == [1.0, 1.0, 0.0, 0.0]
    assert best.score.tolist() == pytest.approx([0.2, 0.8, 0.5, 0.8])


def test_objective_matches_the_metric_on_any_subset(conv_metric, triplets):
    batch = triplets(5)
    idx = torch.tensor([4, 0, 0, 2])
    with torch.no_grad():
        obj = TwoAFCObjective(conv_metric, batch, "ref")
        d0, d1 = obj.distances((batch.ref[idx],), idx)
        assert torch.allclose(d0, conv_metric.distance(batch.ref[idx], batch.x0[idx]), atol=1e-6)
        assert torch.allclose(d1, conv_metric.distance(batch.ref[idx], batch.x1[idx]), atol=1e-6)
        d0, d1 = TwoAFCObjective(conv_metric, batch, "all").distances((batch.ref, batch.x0, batch.x1))
        assert torch.allclose(d1, conv_metric.distance(batch.ref, batch.x1), atol=1e-6)
