"""A fingerprint of a model folder's weights, recorded at training and checked by merge/export/resume."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import ModelError

CHUNK = 1 << 20
SAMPLES = 16


def fingerprint_folder(folder: Path) -> str | None:
    """sha256 over each weight file's name, size, safetensors header and 16 evenly spaced 1 MiB samples.

    Reading every byte of a 14 GB base at each command would cost a minute; sampling still changes when any
    tensor's layout changes, and when weights differ anywhere but in a few unsampled bytes.
    """
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with f.open("rb") as fh:
            if f.suffix == ".safetensors":
                n = int.from_bytes(fh.read(8), "little")
                h.update(fh.read(min(n, 100 << 20)))
            for i in range(SAMPLES):
                fh.seek(size * i // SAMPLES)
                h.update(fh.read(CHUNK))
    return "sha256-sampled:" + h.hexdigest()[:32]


def check_same_base(recorded: str | None, found: str | None, *, what: str, where: str) -> None:
    """The one rule for "is this the base the adapter was trained on": both fingerprints known and different is a
    ModelError naming `where` (the run) and `what` (the base now); a missing one (a hub base, a run from before
    fingerprints) is not checked."""
    if recorded and found and recorded != found:
        raise ModelError(f"{where}: adapter was trained on base weights {recorded}, but {what} now has {found}; "
                         "use the original base")
