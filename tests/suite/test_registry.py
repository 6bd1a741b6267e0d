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


class _EntryPoint:
    """The part of importlib.metadata.EntryPoint the registry reads."""

    def __init__(self, name, value, dist):
        self.name, self.value = name, value
        self.dist = type("Dist", (), {"name": dist})()


def _with_entry_points(monkeypatch, groups):
    import suite.registry as registry

    def fake(group, name=None):
        return [ep for ep in groups.get(group, []) if name is None or ep.name == name]

    monkeypatch.setattr(registry, "entry_points", fake)


def test_a_plugin_name_that_collides_with_another_is_an_error_naming_both_packages(monkeypatch):
    _with_entry_points(monkeypatch, {"lipsim_suite.things": [
        _EntryPoint("widget", "collections:OrderedDict", "first-plugin"),
        _EntryPoint("widget", "collections:Counter", "second-plugin")]})
    reg = Registry("thing", "lipsim_suite.things")
    with pytest.raises(SuiteError, match="'widget' is registered twice.*first-plugin and package second-plugin"):
        reg.names()


def test_a_plugin_name_that_is_a_builtin_alias_is_an_error(monkeypatch):
    _with_entry_points(monkeypatch, {"lipsim_suite.things": [
        _EntryPoint("w", "collections:Counter", "some-plugin")]})
    reg = Registry("thing", "lipsim_suite.things")

    @reg.register("widget", aliases=("w",))
    class Widget:
        """Makes widgets."""

    with pytest.raises(SuiteError, match="'w' .*some-plugin.* is already an alias of 'widget'"):
        reg.names()


def test_an_alias_taken_by_another_entry_is_an_error():
    reg = Registry("thing", "lipsim_suite.tests-none")
    reg.add("x", "collections:OrderedDict")
    with pytest.raises(SuiteError, match="alias 'x' of 'y'.*already taken by 'x'"):
        reg.add("y", "collections:Counter", aliases=("x",))


def test_builtins_come_from_the_projects_own_entry_points():
    from importlib.metadata import entry_points

    modules = {ep.name: ep.value for ep in entry_points(group="lipsim_suite.modules")}
    assert modules["metrics"] == "metrics" and modules["datasets"] == "suite.datasets"
    assert "l2" in METRICS.names()


def test_bind_fills_defaults_and_names_a_misspelt_option():
    reg = Registry("thing", "lipsim_suite.tests-none")

    @reg.register("widget")
    class Widget:
        def __init__(self, size: int = 3, colour: str = "red"):
            self.size, self.colour = size, colour

    assert reg.bind("widget", {"size": 5}) == {"size": 5, "colour": "red"}
    with pytest.raises(SuiteError, match="bad options.*accepted: size, colour"):
        reg.bind("widget", {"sise": 5})
