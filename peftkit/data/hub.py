"""Which copy of the data a run reads, the local one or the public hub dataset behind it, and reading the hub one.

A recipe names the local copy it was written against (data.path, data.eval_path) and, in data.hub, the hub
dataset those rows come from. The local copy wins when it exists; otherwise the hub split stands in for it. A bare
hub id in a path (`path: owner/name`) is the hub dataset's train split. Choosing looks only at the file system, so
preflight and `recipes validate` never need the network; the choice is recorded in the data report (meta.json).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import DataError
from ..recipe.schema.data import HUB_DATASET_ID, DataSpec, HubSource
from .bundle import SourceRead
from .sources import SUFFIXES, Loaded, Record

HubLoader = Callable[..., object]  # as datasets.load_dataset(id, name=, data_dir=, split=, revision=) -> rows


def choose_sources(spec: DataSpec, base_dir: Path) -> tuple[SourceRead, ...]:
    """What each data source of the recipe will be read from: data.path, the held-out source, then data.mix."""
    hub = spec.hub
    reads = [choose("data.path", spec.path, hub, hub.split if hub else None, base_dir)]
    if spec.eval_path is not None or (hub is not None and hub.eval_split is not None):
        reads.append(choose("data.eval_path", spec.eval_path, hub, hub.eval_split if hub else None, base_dir))
    reads += [choose(f"data.mix.{i}.path", m.path, m.hub, m.hub.split if m.hub else None, base_dir)
              for i, m in enumerate(spec.mix)]
    return tuple(reads)


def choose(key: str, path: str | None, hub: HubSource | None, split: str | None, base_dir: Path) -> SourceRead:
    """The local copy when it exists, else the hub split; a missing file with no hub source stays local (its
    reader then says it is missing). `local` is the path as the recipe holds it (absolute once loaded from a file)."""
    if path is not None and path.startswith("builtin:"):
        return SourceRead(key, "builtin", local=path)
    if path is not None:
        p = Path(path).expanduser()
        if _exists(p if p.is_absolute() else base_dir / p):
            return SourceRead(key, "local", local=path)
        if hub is None and HUB_DATASET_ID.fullmatch(path) and not path.lower().endswith(SUFFIXES):
            return SourceRead(key, "hub", hub=path, split="train")
    if hub is None or split is None:
        return SourceRead(key, "local", local=path)
    return SourceRead(key, "hub", local=path, hub=hub.id, config=hub.config, data_dir=hub.data_dir, split=split,
                      revision=hub.revision)


def read_hub(source: SourceRead, loader: HubLoader | None = None) -> Loaded:
    """The rows of a hub split, each named by the hub label in errors. `loader` defaults to datasets.load_dataset;
    a failure (offline, unknown id or split) is one DataError naming the absent local copy and the hub dataset."""
    if loader is None:
        from datasets import load_dataset as loader
    try:
        ds = loader(source.hub, name=source.config, data_dir=source.data_dir, split=source.split,
                    revision=source.revision)
        rows = ds.to_list() if hasattr(ds, "to_list") else list(ds)
    except Exception as e:  # datasets raises many types (ConnectionError, DatasetNotFoundError, ValueError, ...)
        raise DataError(*_not_served(source, e)) from None
    label = source.hub_label()
    if not rows:
        raise DataError(label, "no rows (empty split)")
    return Loaded(records=[Record(r, label, i) for i, r in enumerate(rows, 1)])


def _not_served(source: SourceRead, e: Exception) -> tuple[str, str]:
    lines = str(e).strip().splitlines()
    why = f"the dataset hub did not serve {source.hub_label()} ({lines[0] if lines else type(e).__name__})"
    if source.local is not None:
        return source.local, f"no such file or folder ({source.key}), and {why}"
    return str(source.hub), f"not a local file or folder, and {why}"


def _exists(p: Path) -> bool:
    try:
        return p.exists()
    except (OSError, ValueError):  # a name too long, a NUL byte: the reader names the path and why
        return True
