"""Checkpoints that are either complete or invisible: written under a temporary name, renamed last.

checkpoints/step-000050/
  adapter.safetensors   trainable weights
  optimizer.pt          optimizer, scheduler, fp16 gradient-scaler state (loaded with weights_only=True)
  rng.pt                python, numpy, torch (and this process's CUDA device) generator states
  rng-rank1.pt ...      the same for each further process of a multi-process run
  state.json            loop counters, loss curve, eval-before, and the size of every file above (written last)

With several processes the main one owns the folder: it creates the temporary folder, every process drops its
own RNG state into it, and the main process writes the rest and renames it once all have.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import RunDirError
from .loop import FitState
from .ranks import Ranks

FILES = ("adapter.safetensors", "optimizer.pt", "rng.pt")


def _rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "gauss": gauss},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():  # this process's device only: resume may see a different number of GPUs
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        torch.cuda.set_rng_state(cuda if isinstance(cuda, torch.Tensor) else cuda[0])  # older files: a list


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def rng_file(rank: int) -> str:
    return "rng.pt" if rank == 0 else f"rng-rank{rank}.pt"


def save_checkpoint(
    root: Path, model, optimizer, scheduler, state: FitState, *, extra: dict, keep: int, scaler=None,
    ranks: Ranks | None = None,
) -> Path:
    """Called by every process of the run at the same step."""
    ranks = ranks or Ranks()
    final = root / f"step-{state.step:06d}"
    tmp = root / f".step-{state.step:06d}.tmp"
    if ranks.main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    ranks.wait()
    try:
        torch.save(_rng_state(), tmp / rng_file(ranks.rank))
        ranks.wait()
        if ranks.main:
            save_file(trainable_state(model), str(tmp / "adapter.safetensors"))
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict() if scaler is not None else None}, tmp / "optimizer.pt")
            files = sorted(f.name for f in tmp.iterdir())
            sizes = {f: (tmp / f).stat().st_size for f in files}
            (tmp / "state.json").write_text(json.dumps({"fit": asdict(state), "extra": extra, "sizes": sizes}))
            for f in (*files, "state.json"):
                with open(tmp / f, "rb") as fh:
                    os.fsync(fh.fileno())
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
    except BaseException:
        if ranks.main:
            shutil.rmtree(tmp, ignore_errors=True)  # the previous checkpoint is untouched
        raise
    if ranks.main:
        for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    ranks.wait()
    return final


def list_checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))


def _valid(ckpt: Path) -> dict | None:
    try:
        meta = json.loads((ckpt / "state.json").read_text())
        sizes = meta["sizes"]
        if all(f in sizes for f in FILES) and all((ckpt / f).stat().st_size == n for f, n in sizes.items()):
            return meta
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def latest_valid(root: Path) -> tuple[Path, dict] | None:
    """Newest checkpoint whose files are all present and whole; broken newer ones are skipped with a warning."""
    for ckpt in reversed(list_checkpoints(root)):
        meta = _valid(ckpt)
        if meta is not None:
            return ckpt, meta
        warnings.warn(f"checkpoint {ckpt} is incomplete or corrupt; falling back to an older one", stacklevel=2)
    return None


def load_checkpoint(
    ckpt: Path, meta: dict, model, optimizer, scheduler, scaler=None, rank: int = 0
) -> tuple[FitState, dict]:
    """Every process loads the same weights and optimizer state, and its own RNG state (rank 0's where the run
    had fewer processes than this one)."""
    own = ckpt / rng_file(rank)
    try:
        weights = load_file(str(ckpt / "adapter.safetensors"))
        opt = torch.load(ckpt / "optimizer.pt", weights_only=True, map_location="cpu")
        rng = torch.load(own if own.is_file() else ckpt / rng_file(0), weights_only=True)
    except Exception as exc:  # a file that passed the size check but does not parse
        raise RunDirError(f"{ckpt}: checkpoint unreadable ({type(exc).__name__}: {exc})") from None
    params = dict(model.named_parameters())
    missing = [n for n in weights if n not in params]
    if missing or len(weights) != sum(p.requires_grad for p in params.values()):
        raise RunDirError(f"{ckpt}: checkpoint does not match this recipe's adapter (e.g. {missing[:1] or 'count'})")
    with torch.no_grad():
        for n, w in weights.items():
            params[n].copy_(w)
    optimizer.load_state_dict(opt["optimizer"])
    scheduler.load_state_dict(opt["scheduler"])
    if scaler is not None and opt.get("scaler"):  # fp16 mixed precision: the loss scale resumes where it was
        scaler.load_state_dict(opt["scaler"])
    _set_rng_state(rng)
    return FitState(**meta["fit"]), meta.get("extra", {})
