"""Weights as data, apart from the architectures (as timm keeps its pretrained configs).

A *tag* names one set of published weights: the files a metric needs, where their
publisher serves them (for the README and ``lipsim weights fetch``), the paper, and a
sha256 where the publisher states one (torchvision's file names carry a prefix of it).
Metric families register their tags with :func:`register_tag` when imported.

Lookup is read-only and never touches the network. For each file of a tag, in order:

1. the explicit ``weights=`` option of the metric: a file (tags of one file) or a
   folder holding the file;
2. ``$LIPSIM_SUITE_WEIGHTS/<tag>/<file>`` (default ``~/.cache/lipsim-suite/weights``; where
   ``lipsim weights fetch`` puts what it downloads);
3. the caches users already have: torch hub (``$TORCH_HOME/hub/checkpoints/<file>``,
   ``$TORCH_HOME`` defaulting to ``~/.cache/torch``), the Hugging Face hub cache
   (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``:
   ``models--ORG--NAME/snapshots/*/<file>``) and DreamSim's ``./models/<file>``
   layout, each only for files published there; and, for files that ship inside an
   installed package (the LPIPS linear heads in ``lpips``, DISTS's α/β in
   ``DISTS_pytorch``), that package's folder.

A file found nowhere is a :class:`suite.errors.MissingWeightsError` naming the file,
every place looked at, and the fetch command.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from suite.errors import MissingWeightsError, SuiteError

#: environment variable naming the suite's own weights folder
WEIGHTS_ENV = "LIPSIM_SUITE_WEIGHTS"


@dataclass(frozen=True)
class WeightFile:
    """One published file.

    ``name`` is the file name looked for; ``url`` where the publisher serves it;
    ``sha256`` the full digest or a prefix of it, ``None`` where the publisher states
    none; ``torch_hub`` whether torch hub caches it (``hub/checkpoints/<name>``);
    ``hf_repo`` the Hugging Face repository (``ORG/NAME``) that serves it, if any;
    ``dreamsim`` the path inside DreamSim's ``./models`` folder, if it keeps it there;
    ``package`` ``"PACKAGE:path/inside"`` for a file that ships inside an installed package.
    """

    name: str
    url: str
    sha256: str | None = None
    torch_hub: bool = False
    hf_repo: str | None = None
    dreamsim: str | None = None
    package: str | None = None


@dataclass(frozen=True)
class WeightsTag:
    """A set of weights: ``tag`` (e.g. ``lpips-alex``), the ``metric`` that uses it, its files and paper."""

    tag: str
    metric: str
    files: tuple[WeightFile, ...]
    paper: str
    description: str = ""
    extra: dict = field(default_factory=dict)

    def file(self, name: str) -> WeightFile:
        for f in self.files:
            if f.name == name:
                return f
        raise SuiteError(f"weights {self.tag!r} have no file {name!r}; files: {', '.join(f.name for f in self.files)}")


TAGS: dict[str, WeightsTag] = {}


def register_tag(tag: WeightsTag) -> WeightsTag:
    """Add ``tag`` to :data:`TAGS` (a tag registered twice with other content is an error)."""
    existing = TAGS.get(tag.tag)
    if existing is not None and existing != tag:
        raise SuiteError(f"weights tag {tag.tag!r} is registered twice with different files")
    TAGS[tag.tag] = tag
    return tag


def get_tag(tag: str) -> WeightsTag:
    if tag not in TAGS:
        import difflib

        close = difflib.get_close_matches(tag, list(TAGS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise SuiteError(f"unknown weights tag {tag!r}{hint} (`lipsim weights` lists them)")
    return TAGS[tag]


def suite_folder() -> Path:
    value = os.environ.get(WEIGHTS_ENV)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "lipsim-suite" / "weights"


def package_path(spec: str) -> Path | None:
    """``"PACKAGE:path/inside"`` as a path in the installed package (``None`` if it is not installed)."""
    package, _, inside = spec.partition(":")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0]) / inside


def torch_hub_folder() -> Path:
    home = os.environ.get("TORCH_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torch"
    return Path(home).expanduser() / "hub" / "checkpoints"


def hf_hub_folder() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(home).expanduser() / "hub"


def candidates(tag: WeightsTag, file: WeightFile, explicit: str | Path | None = None) -> list[Path]:
    """Every path where ``file`` of ``tag`` may be, in lookup order (see the module docstring)."""
    out: list[Path] = []
    if explicit is not None:
        p = Path(explicit).expanduser()
        out.append(p if (p.is_file() and len(tag.files) == 1) else p / file.name)
    out.append(suite_folder() / tag.tag / file.name)
    if file.torch_hub:
        out.append(torch_hub_folder() / file.name)
    if file.hf_repo:
        repo = hf_hub_folder() / ("models--" + file.hf_repo.replace("/", "--")) / "snapshots"
        snapshots = sorted(repo.glob(f"*/{file.name}")) if repo.is_dir() else []
        out.extend(snapshots or [repo / "<revision>" / file.name])
    if file.dreamsim:
        out.append(Path("models") / file.dreamsim)
    if file.package:
        inside = package_path(file.package)
        out.append(inside if inside is not None else Path(f"<package {file.package.partition(':')[0]} not installed>"))
    return out


def locate(tag: str | WeightsTag, name: str | None = None, explicit: str | Path | None = None) -> Path:
    """The path of file ``name`` (default: the tag's only file) of ``tag``; read-only, no network.

    With an ``explicit`` path only that path is looked at: a user who names a file means it.
    """
    tag = get_tag(tag) if isinstance(tag, str) else tag
    if name is None:
        if len(tag.files) != 1:
            raise SuiteError(f"weights {tag.tag!r} have {len(tag.files)} files; name one")
        name = tag.files[0].name
    file = tag.file(name)
    places = candidates(tag, file, explicit)
    if explicit is not None:
        places = places[:1]
    for path in places:
        if path.is_file():
            return path
    raise MissingWeightsError(tag.tag, file.name, [str(p) for p in places])


def resolve(tag: str | WeightsTag, explicit: str | Path | None = None) -> dict[str, Path]:
    """``{file name: path}`` for every file of ``tag`` (the first missing one is an error)."""
    tag = get_tag(tag) if isinstance(tag, str) else tag
    return {f.name: locate(tag, f.name, explicit) for f in tag.files}


def status(tag: str | WeightsTag) -> dict[str, Path | None]:
    """``{file name: path or None}``: what :func:`resolve` would find, without raising."""
    tag = get_tag(tag) if isinstance(tag, str) else tag
    out: dict[str, Path | None] = {}
    for f in tag.files:
        try:
            out[f.name] = locate(tag, f.name)
        except MissingWeightsError:
            out[f.name] = None
    return out


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """The hex sha256 of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_matches(digest: str, expected: str | None) -> bool | None:
    """Whether hex ``digest`` agrees with ``expected`` (a full digest or a prefix, any case).

    ``None`` where no digest is stated (nothing to check); an ``expected`` that is not hex
    is a :class:`SuiteError` (a typo in a tag would otherwise reject every download).
    """
    if not expected:
        return None
    expected = expected.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{1,64}", expected):
        raise SuiteError(f"sha256 {expected!r} is not a hex digest or a prefix of one")
    return digest.lower().startswith(expected)


__all__ = ["TAGS", "WEIGHTS_ENV", "WeightFile", "WeightsTag", "candidates", "file_sha256", "get_tag",
           "hf_hub_folder", "locate", "package_path", "register_tag", "resolve", "sha256_matches", "status",
           "suite_folder", "torch_hub_folder"]
