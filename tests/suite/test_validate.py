import numpy as np
import pytest

from suite import validate
from suite.atomic import TMP_PREFIX, atomic_write, atomic_write_json
from suite.errors import SuiteError


@pytest.mark.parametrize("value", [True, 1.0, "3", None])
def test_integer_refuses_what_is_not_an_integer(value):
    with pytest.raises(SuiteError, match=r"^steps must be an integer ≥ 1; got "):
        validate.integer(value, "steps", 1)


def test_integer_accepts_numpy_integers_and_checks_the_minimum():
    assert validate.integer(np.int64(4), "n", 1) == 4 and type(validate.integer(np.int64(4), "n")) is int
    with pytest.raises(SuiteError, match="count must be an integer ≥ 1; got 0"):
        validate.integer(0, "count", 1)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, "0.5"])
def test_number_refuses_non_finite_and_non_numbers(value):
    with pytest.raises(SuiteError, match="eps must be a finite number ≥ 0"):
        validate.number(value, "eps", 0)


def test_number_with_an_open_bound():
    assert validate.number(0.1, "lr", 0, above=True) == 0.1
    with pytest.raises(SuiteError, match="lr must be a finite number > 0; got 0"):
        validate.number(0, "lr", 0, above=True)
    assert validate.optional_number(None, "x", 0) is None


def test_choice_boolean_text_mapping():
    assert validate.choice("l2", ("l2", "linf"), "norm") == "l2"
    with pytest.raises(SuiteError, match="norm must be one of l2, linf; got 'l1'"):
        validate.choice("l1", ("l2", "linf"), "norm")
    with pytest.raises(SuiteError, match="must be true or false"):
        validate.boolean(1, "use_gpu")
    with pytest.raises(SuiteError, match="must be a non-empty string"):
        validate.text("", "name")
    with pytest.raises(SuiteError, match="must be a table of options"):
        validate.mapping([1], "options")


def test_atomic_write_replaces_whole_files_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "f.bin"
    atomic_write(target, b"one")
    atomic_write(target, lambda path: path.write_bytes(b"two"))
    assert target.read_bytes() == b"two" and oct(target.stat().st_mode & 0o777) == "0o644"
    atomic_write_json(tmp_path / "x.json", {"b": 1, "a": 2})
    assert (tmp_path / "x.json").read_text() == '{\n "a": 2,\n "b": 1\n}\n'
    assert not [p for p in tmp_path.rglob(f"{TMP_PREFIX}*")]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write(target, b"old")

    def broken(path):
        path.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]
