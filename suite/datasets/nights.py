"""``nights``: the NIGHTS 2AFC set of DreamSim (Fu et al. 2023), read from its ``data.csv``.

``root/data.csv`` is read by column name; it needs the columns :data:`COLUMNS`.
Image paths are relative to ``root``. As in DreamSim and LipSim only triplets
with ``votes >= min_votes`` (6) are kept. ``x0`` is the left image, ``x1`` the
right one, and the judge is the fraction of votes for the right image:
``right_vote`` itself when the vote columns hold fractions, ``right_vote / votes``
when they hold counts (some ``left_vote`` or ``right_vote`` in the file above 1;
decided for the whole file, so a count of 0 or 1 is never mistaken for a fraction,
and counts must then be whole numbers).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from suite import validate
from suite.datasets.base import FileTriplets
from suite.datasets.images import check_files_exist, check_root
from suite.errors import SuiteError
from suite.registry import register_dataset

COLUMNS = (
    "id", "left_vote", "right_vote", "votes", "ref_path", "left_path", "right_path", "prompt", "split", "is_imagenet"
)
#: our split -> (value of the ``split`` column, required ``is_imagenet`` or None for any)
SPLITS: dict[str, tuple[str, bool | None]] = {
    "train": ("train", None),
    "val": ("val", None),
    "test": ("test", None),
    "test_imagenet": ("test", True),
    "test_no_imagenet": ("test", False),
}
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    """The rows of ``data.csv`` as dicts keyed by column name; missing columns are a SuiteError."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise SuiteError(f"nights: {str(csv_path)!r} lacks the columns {', '.join(missing)}")
            rows = list(reader)
    except FileNotFoundError:
        raise SuiteError(f"nights: {str(csv_path)!r} not found (root must hold data.csv)") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise SuiteError(f"nights: cannot read {str(csv_path)!r}: {err}") from None
    for n, row in enumerate(rows, start=1):
        if any(row[c] is None for c in COLUMNS):
            raise SuiteError(f"nights: {str(csv_path)!r} data row {n} has fewer fields than the header")
    return rows


def number(row: dict[str, str], column: str, csv_path: Path) -> float:
    """``row[column]`` as a finite float, else a SuiteError naming the file, the row id and the value."""
    value = row.get(column)
    try:
        result = float(value)
    except (TypeError, ValueError):
        result = math.nan
    if not math.isfinite(result):
        where = f"nights: {str(csv_path)!r} row id={row.get('id')!r}"
        raise SuiteError(f"{where}: {column} must be a number; got {value!r}")
    return result


def flag(row: dict[str, str], column: str, csv_path: Path) -> bool:
    """``row[column]`` as a bool (``True``/``False``, ``true``/``false``, ``1``/``0``), else a SuiteError."""
    value = (row.get(column) or "").strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    where = f"nights: {str(csv_path)!r} row id={row.get('id')!r}"
    raise SuiteError(f"{where}: {column} must be True or False; got {row.get(column)!r}")


def votes_are_counts(rows: list[dict[str, str]], csv_path: Path) -> bool:
    """True when some ``left_vote`` or ``right_vote`` of the file exceeds 1 (counts, not fractions)."""
    return any(number(r, c, csv_path) > 1 for r in rows for c in ("left_vote", "right_vote"))


def judge_of(row: dict[str, str], counts: bool, csv_path: Path) -> float:
    """Fraction of votes for the right image, in [0, 1].

    ``right_vote`` for a file of fractions; ``right_vote / votes`` for a file of
    counts, where ``right_vote`` must be a whole number and ``votes`` positive.
    """
    where = f"nights: {str(csv_path)!r} row id={row['id']!r}"
    judge = number(row, "right_vote", csv_path)
    if counts:
        votes = number(row, "votes", csv_path)
        if judge != int(judge) or votes <= 0:
            raise SuiteError(
                f"{where}: right_vote={judge} and votes={votes} must be whole counts with votes > 0 "
                "(some vote in the file exceeds 1, so the vote columns are read as counts)"
            )
        judge /= votes
    if not 0 <= judge <= 1:
        raise SuiteError(f"{where}: the right-vote fraction {judge} is outside [0, 1]")
    return judge


@register_dataset("nights")
class Nights(FileTriplets):
    """NIGHTS 2AFC set (DreamSim), from root/data.csv; triplets with votes >= 6, resized to 224."""

    def __init__(
        self, root: str | Path | None = None, split: str = "test", image_size: int = 224, min_votes: float = 6
    ):
        self.root = check_root(root, "nights")
        self.split = validate.choice(split, SPLITS, "nights split")
        self.image_size = validate.image_size(image_size, "nights")
        min_votes = validate.number(min_votes, "nights: min_votes", 0)
        csv_path = self.root / "data.csv"
        rows = read_rows(csv_path)
        counts = votes_are_counts(rows, csv_path)
        rows = [r for r in rows if self._keeps(r, min_votes, csv_path)]
        if not rows:
            raise SuiteError(f"nights: {str(csv_path)!r} has no triplet in split {split!r} with votes >= {min_votes}")
        self.ids = [r["id"] for r in rows]
        _check_unique(self.ids, csv_path)
        self.judges = [judge_of(r, counts, csv_path) for r in rows]
        self.paths = [tuple(self.root / r[c] for c in ("ref_path", "left_path", "right_path")) for r in rows]
        images = (p for triple in self.paths for p in triple)
        check_files_exist(images, f"nights split {split!r} under {str(self.root)!r}")

    def _keeps(self, row: dict[str, str], min_votes: float, csv_path: Path) -> bool:
        """Whether ``row`` belongs to this split and has at least ``min_votes`` votes."""
        column_split, imagenet = SPLITS[self.split]
        if row["split"] != column_split or number(row, "votes", csv_path) < min_votes:
            return False
        return imagenet is None or flag(row, "is_imagenet", csv_path) == imagenet

    def sample_id(self, index: int) -> str:
        return f"nights/{self.ids[index]}"


def _check_unique(ids: list[str], csv_path: Path) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise SuiteError(f"nights: {str(csv_path)!r}: id {i!r} appears twice in the split; ids must be unique")
        seen.add(i)
