import pytest

from suite.errors import SuiteError, UnknownNameError
from suite.registry import METRICS, Registry


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownNameError, match="did you mean l2"):
        METRICS.get("l3")


def test_aliases_and_case_resolve_to_the_canonical_entry():
    assert METRICS.canonical("EUCLIDEAN") == "l2"


def test_lazy_entries_import_on_first_use_and_describe_from_docstring():
    reg = Registry("thing", "lipsim_suite.tests-none")
    reg.add("ordered", "collections:OrderedDict")
    assert reg.get("ordered").__name__ == "OrderedDict"
    assert reg.describe()[0][1].startswith("Dictionary that remembers")


def test_broken_lazy_entry_fails_with_its_target_named():
    reg = Registry("thing", "lipsim_suite.tests-none")
    reg.add("broken", "no_such_module_xyz:thing")
    with pytest.raises(SuiteError, match="no_such_module_xyz:thing"):
        reg.get("broken")


def test_decorator_registers_with_description():
    reg = Registry("thing", "lipsim_suite.tests-none")

    @reg.register("widget", aliases=("w",))
    class Widget:
        """Makes widgets."""

    assert reg.get("w") is Widget
    assert reg.describe() == [("widget", "Makes widgets.")]


def test_two_different_objects_under_one_name_is_an_error():
    reg = Registry("thing", "lipsim_suite.tests-none")
    reg.add("x", "collections:OrderedDict")
    with pytest.raises(SuiteError, match="registered twice"):
        reg.add("x", "collections:Counter")
