"""train(recipe): set up, measure before, fit (checkpointing), measure after, write the run directory."""

from __future__ import annotations

import json
import random
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from rich.console import Console
from torch.utils.data import DataLoader

from ..adapters import ParamReport, attach_adapter, param_groups, param_report
from ..data import build_data, ensure_pad_token, make_collator
from ..errors import ModelError, RunDirError, TrainingAborted
from ..eval.measure import measure
from ..models.load import base_config, load_base, load_tokenizer
from ..recipe import Recipe, recipe_to_yaml
from ..rundir import default_run_dir, prepare_run_dir, versions, write_atomic, write_json
from .batches import EpochBatches, endless
from .checkpoint import latest_valid, load_checkpoint, save_checkpoint
from .interrupt import GracefulStop
from .loop import FitState, fit
from .memory import choose_checkpointing
from .optim import build_optimizer, build_scheduler
from .preflight import preflight
from .progress import TrainProgress


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    metrics: dict
    params: ParamReport
    resumed_from: int | None = None  # step of the checkpoint this run continued from


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _open_run_dir(recipe: Recipe, run_dir, force: bool, resume: bool) -> tuple[Path, tuple[Path, dict] | None]:
    out = Path(run_dir) if run_dir else default_run_dir(recipe)
    resume = resume or recipe.train.resume == "auto"
    found = latest_valid(out / "checkpoints") if resume and out.is_dir() else None
    if found is None:
        if resume and recipe.train.resume != "auto":
            raise RunDirError(f"{out}: no valid checkpoint to resume from (train.checkpoint_every sets how often they are written)")
        prepare_run_dir(out, overwrite=force or recipe.output.overwrite)
    return out, found


def _check_same_base(out: Path, fingerprint: str | None) -> None:
    meta_file = out / "meta.json"
    if not meta_file.is_file():
        return
    recorded = json.loads(meta_file.read_text()).get("base", {}).get("fingerprint")
    if recorded and fingerprint and recorded != fingerprint:
        raise ModelError(f"{out}: checkpoint was trained on base {recorded}, but model.base now has weights {fingerprint}")


def train(
    recipe: Recipe, *, run_dir: str | Path | None = None, force: bool = False, resume: bool = False,
    console: Console | None = None,
) -> RunResult:
    console = console or Console(stderr=True)
    t_start = time.perf_counter()
    # before any weights load, and before --force deletes anything
    preflight(recipe, Path(run_dir) if run_dir else default_run_dir(recipe),
              resume=resume or recipe.train.resume == "auto", force=force)
    out, found = _open_run_dir(recipe, run_dir, force, resume)
    seed_everything(recipe.train.seed)

    tokenizer = load_tokenizer(recipe.model)
    data = build_data(recipe.data, tokenizer, base_dir=Path.cwd(), seed=recipe.train.seed,
                      task=recipe.model.task)
    ensure_pad_token(tokenizer, stop_token_ids=data.stop_token_ids)
    num_labels = len(data.label_names or ()) or None
    gc = choose_checkpointing(recipe.train.gradient_checkpointing, batch_size=recipe.train.batch_size,
                              max_length=recipe.data.max_length, config=base_config(recipe.model))
    packed = recipe.packs(gc.enabled)
    base = load_base(recipe.model, num_labels=num_labels, label_names=data.label_names, packed=packed)
    if found:
        _check_same_base(out, base.fingerprint)
    model = attach_adapter(base.model, recipe.adapter, task=recipe.model.task, total_steps=recipe.train.max_steps)
    if gc.enabled:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False},
                                              offload=recipe.train.checkpoint_offload and torch.cuda.is_available())
        model.enable_input_require_grads()
    params = param_report(model)
    console.print(f"[bold]{recipe.name}[/]: {base.source.path_or_id} + {recipe.adapter.method}, {params}", highlight=False)
    console.print(f"gradient checkpointing {'on' if gc.enabled else 'off'} ({gc.why}); packing "
                  f"{'on' if packed else 'off'}", highlight=False)

    accelerator = Accelerator(mixed_precision=recipe.train.mixed_precision, cpu=not torch.cuda.is_available())
    collate = make_collator(tokenizer, packing=packed, task=recipe.model.task)
    sampler = EpochBatches(len(data.train), recipe.train.batch_size, recipe.train.seed)
    loader = DataLoader(data.train, batch_sampler=sampler, collate_fn=collate)
    optimizer = build_optimizer(param_groups(model, recipe.adapter, recipe.train.lr, recipe.train.weight_decay), recipe.train)
    model, optimizer = accelerator.prepare(model, optimizer)
    scheduler = build_scheduler(optimizer, recipe.train)
    unwrapped = accelerator.unwrap_model(model)

    meta = {
        "peftkit_command": " ".join(sys.argv),
        "versions": versions(),
        "base": {"model": recipe.model.base, "resolved": base.source.path_or_id, "kind": base.source.kind,
                 "fingerprint": base.fingerprint},
        "quantization": recipe.model.quantization.model_dump(mode="json"),
        "trust_remote_code": recipe.model.trust_remote_code,
        "device": str(accelerator.device),
        "num_processes": accelerator.num_processes,
        "data": data.report.to_dict(),
        "params": {"trainable": params.trainable, "total": params.total},
        "gradient_checkpointing": {"enabled": gc.enabled, "why": gc.why},
        "packing": packed,
    }
    write_atomic(out / "recipe.yaml", recipe_to_yaml(recipe))
    write_json(out / "meta.json", meta)

    eval_bs = recipe.eval.batch_size or recipe.train.batch_size
    eval_collate = make_collator(tokenizer, packing=packed, task=recipe.model.task)  # loss only; generation pads

    def score(label: str):
        m = measure(unwrapped, tokenizer, data.eval, recipe.eval, collate=eval_collate, batch_size=eval_bs,
                    device=accelerator.device, stop_token_ids=data.stop_token_ids, num_labels=num_labels)
        shown = "  ".join(f"{k} {v:.4f}" for k, v in m.metrics.items())
        console.print(f"eval {label}: {shown}  ({m.examples} examples, {m.seconds:.1f}s)", highlight=False)
        return m

    state, extra, resumed_from = FitState(), {}, None
    if found:
        state, extra = load_checkpoint(found[0], found[1], unwrapped, optimizer, scheduler, accelerator.scaler)
        resumed_from = state.step
        console.print(f"resuming from {found[0]} (step {state.step})", highlight=False)
    elif recipe.eval.before:
        m = score("before")
        extra = {"before": m.metrics, "before_s": m.seconds}

    def checkpoint(s: FitState) -> None:
        try:
            save_checkpoint(out / "checkpoints", unwrapped, optimizer, scheduler, s, extra=extra,
                            keep=recipe.train.keep_checkpoints, scaler=accelerator.scaler)
        except OSError as exc:  # disk full, quota, permissions: the previous checkpoint is untouched
            raise TrainingAborted(
                f"cannot write the step-{s.step} checkpoint in {out / 'checkpoints'} ({exc.strerror or exc}); "
                "earlier checkpoints are intact"
            ) from None

    with GracefulStop() as stop, TrainProgress(recipe.train.max_steps, console, log_every=recipe.train.log_every,
                                                start=state.step) as bar:
        fit(model, optimizer, scheduler, endless(loader, sampler, start=state.micro_batches), accelerator,
            recipe.train, state, on_step=bar.update, checkpoint=checkpoint, should_stop=stop)
    if stop.requested:
        checkpoint(state)
        raise TrainingAborted(
            f"{stop.requested} at step {state.step}: checkpoint written; resume with: peftkit train --resume {out}"
        )
    after = score("after")

    unwrapped.save_pretrained(out / "adapter", safe_serialization=True)
    tokenizer.save_pretrained(out / "adapter")
    wall = time.perf_counter() - t_start
    eval_s = extra.get("before_s", 0.0) + after.seconds
    metrics = {
        "train": {
            "steps": state.step,
            "final_loss": state.curve[-1]["loss"] if state.curve else None,
            "loss_curve": state.curve,
            "tokens": state.tokens,
            "trained_tokens": state.trained_tokens,
            "tokens_per_s": state.tokens / max(state.train_s, 1e-9),
            "trained_tokens_per_s": state.trained_tokens / max(state.train_s, 1e-9),
            "train_s": state.train_s,
            "wall_s": wall,
            "eval_share": eval_s / max(wall, 1e-9),
            "peak_memory_mb": peak_memory_mb(),
            "skipped_nonfinite": state.skipped,
        },
        "eval": {
            "before": extra.get("before"),
            "after": after.metrics,
            "examples": after.examples,
            "samples_after": list(after.samples),
        },
    }
    write_json(out / "metrics.json", metrics)
    console.print(f"run directory: {out}", highlight=False)
    return RunResult(run_dir=out, metrics=metrics, params=params, resumed_from=resumed_from)
