"""train(recipe): set up, measure before, fit (checkpointing), measure after, write the run directory."""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device
from rich.console import Console
from torch.utils.data import DataLoader

from ..adapters import ParamReport, attach_adapter, param_groups, param_report
from ..adapters.attach import init_from_dir
from ..data import make_collator
from ..data.collate import with_kl_partners
from ..data.prepare import prepare_data
from ..errors import PeftkitError, PrivacyError, RunDirError, TrainingAborted
from ..evaluation.measure import measure
from ..hardware import detect, peak_memory_mb, reset_peak_memory
from ..modeling.fingerprint import check_same_base
from ..modeling.load import base_config, load_base
from ..privacy import PrivacyPlan, PrivateSGD, plan_privacy
from ..privacy.audit import canaries
from ..recipe import Recipe, recipe_to_yaml
from ..rundir import (
    BaseInfo, EvalMetrics, Meta, Metrics, TrainMetrics, default_run_dir, prepare_run_dir, read_meta, versions,
    write_atomic, write_record,
)
from .batch_size import choose_batch_size
from .batches import Batches
from .checkpoint import latest_valid, load_checkpoint, save_checkpoint
from .interrupt import GracefulStop
from .loop import FitState, fit
from .choices import resolve, resolve_precision
from .optim import build_optimizer, build_scheduler
from .preflight import preflight
from .progress import TrainProgress
from .recompute import enable_recompute
from .runlog import RunLog, check_report_to, tracker_config
from .ranks import Ranks
from .reference import build_references, choose_reference


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    metrics: Metrics
    params: ParamReport
    resumed_from: int | None = None  # step of the checkpoint this run continued from
    main: bool = True  # False in the other processes of a multi-process run (they print nothing)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _open_run_dir(
    recipe: Recipe, run_dir, force: bool, resume: bool, ranks: Ranks
) -> tuple[Path, tuple[Path, dict] | None]:
    """Every process finds the same checkpoint (before anything changes); only the main one prepares the folder."""
    out = Path(run_dir) if run_dir else default_run_dir(recipe)
    resume = resume or recipe.train.resume == "auto"
    found = latest_valid(out / "checkpoints") if resume and out.is_dir() else None
    ranks.wait()
    if found is None:
        if resume and recipe.train.resume != "auto":
            raise RunDirError(f"{out}: no valid checkpoint to resume from (train.checkpoint_every sets how often they are written)")
        if ranks.main:
            prepare_run_dir(out, overwrite=force or recipe.output.overwrite)
    ranks.wait()
    return out, found


def _refuse_sharded(accelerator: Accelerator) -> None:
    # Sharded engines change how the adapter, optimizer and checkpoints are stored; none of that is tested here.
    kind = accelerator.distributed_type.value
    if kind in ("FSDP", "DEEPSPEED", "MEGATRON_LM"):
        raise PeftkitError(f"accelerate config: distributed_type {kind} is not supported; peftkit trains on several "
                           "GPUs with DDP (accelerate launch --multi_gpu, or torchrun), each holding the whole "
                           "(quantized) base")


def _private_plan(recipe: Recipe, rows: int, accelerator: Accelerator, found) -> PrivacyPlan:
    """train.privacy: refused where the guarantee would not hold; else the noise Opacus's accountant needs for the
    target, with the spent part of a resumed run's budget counted. Before any weights load."""
    if accelerator.num_processes > 1:
        raise PrivacyError(f"train.privacy: {accelerator.num_processes} processes would each sample and noise their "
                           "own batch, which the accountant does not cover; train privately in one process")
    if accelerator.mixed_precision == "fp16":
        raise PrivacyError("train.privacy: fp16's loss scaler would rescale gradients after the noise is added; set "
                           "train.mixed_precision bf16 or no")
    saved = found[1].get("extra", {}) if found else {}
    if found and "privacy" not in saved:
        raise PrivacyError(f"{found[0]}: this checkpoint has no privacy accountant state (a run without "
                           "train.privacy); a private run cannot continue from it")
    t = recipe.train
    return plan_privacy(t.privacy, rows=rows, expected_batch=t.batch_size * t.grad_accum, steps=t.max_steps,
                        history=saved.get("privacy", {}).get("history", ()))


def train(
    recipe: Recipe, *, run_dir: str | Path | None = None, force: bool = False, resume: bool = False,
    console: Console | None = None, memory_cap_bytes: int | None = None,
) -> RunResult:
    """`memory_cap_bytes`: what train.batch_size auto may let a measured peak reach (default: the device's
    memory less a reserve; training.batch_size.memory_cap)."""
    t_start = time.perf_counter()
    hardware = detect()
    recipe, precision = resolve_precision(recipe, hardware)
    # One process per device under `accelerate launch` / torchrun (DDP); the main one alone writes the run directory.
    check_report_to(recipe.train.report_to)
    accelerator = Accelerator(mixed_precision=recipe.train.mixed_precision, cpu=not hardware.cuda,
                              **tracker_config(recipe, Path(run_dir) if run_dir else default_run_dir(recipe)))
    _refuse_sharded(accelerator)
    ranks = Ranks(accelerator)
    console = console or Console(stderr=True)
    if not ranks.main:
        console = Console(stderr=True, quiet=True)
    # before any weights load, and before --force deletes anything; the main process checks for all
    if ranks.main:
        checked = preflight(recipe, Path(run_dir) if run_dir else default_run_dir(recipe),
                            resume=resume or recipe.train.resume == "auto", force=force)
        for line in checked.hub_sources:  # a local copy absent here: its public source is downloaded instead
            console.print(line, highlight=False, markup=False, soft_wrap=True)
    out, found = _open_run_dir(recipe, run_dir, force, resume, ranks)
    seed_everything(recipe.train.seed)

    tokenizer, data = prepare_data(recipe)
    objective = recipe.train.objective
    train_rows, eval_rows = data.train, data.eval
    if objective == "kto":  # each answer's mismatched partner, fixed so the reference can score it once
        train_rows = with_kl_partners(train_rows, recipe.data.max_length)
        eval_rows = with_kl_partners(eval_rows, recipe.data.max_length) if eval_rows else eval_rows
    if recipe.train.canaries:  # peftkit eval --privacy-audit tells these apart from as many held back
        train_rows = [*train_rows, *canaries(tokenizer, recipe, like=train_rows[0])[0]]
    plan = _private_plan(recipe, len(train_rows), accelerator, found) if recipe.train.privacy else None
    num_labels = len(data.label_names or ()) or None
    batch = None
    if recipe.train.batch_size == "auto":  # measured before the run's model loads (training.batch_size)
        batch = choose_batch_size(recipe, hardware, precision, tokenizer=tokenizer, rows=train_rows,
                                  label_names=data.label_names, config=base_config(recipe.model),
                                  resume_from=out if found else None, num_processes=accelerator.num_processes,
                                  memory_cap_bytes=memory_cap_bytes)
        recipe = batch.recipe
        console.print(batch.summary(), highlight=False)
    if plan:  # per-example gradient hooks: activations captured once (no recompute), one example per row
        recipe = recipe.model_copy(update={
            "train": recipe.train.model_copy(update={"gradient_checkpointing": False}),
            "data": recipe.data.model_copy(update={"packing": False})})
    recipe, choices = resolve(recipe, hardware, precision, config=base_config(recipe.model))
    gc, packed = choices.recompute, choices.packing
    base = load_base(recipe.model, num_labels=num_labels, label_names=data.label_names, device=accelerator.device,
                     tokenizer=tokenizer)
    if found:
        recorded = read_meta(out)
        check_same_base(recorded.base.fingerprint if recorded else None, base.fingerprint,
                        what=f"model.base {recipe.model.base}", where=str(found[0]))
    model = attach_adapter(base.model, recipe.adapter, task=recipe.model.task, total_steps=recipe.train.max_steps)
    if recipe.adapter.init_from:
        started = read_meta(init_from_dir(recipe.adapter).parent)
        check_same_base(started.base.fingerprint if started else None, base.fingerprint,
                        what=f"model.base {recipe.model.base}", where=recipe.adapter.init_from)
    if gc.enabled:
        enable_recompute(model, offload=recipe.train.checkpoint_offload)
    params = param_report(model)
    console.print(f"[bold]{recipe.name}[/]: {base.source.path_or_id} + {recipe.adapter.method}, {params}", highlight=False)
    console.print(f"gradient checkpointing {'on' if gc.enabled else 'off'} ({gc.why}); packing "
                  f"{'on' if packed else 'off'}", highlight=False)
    console.print(precision.summary(recipe.model.quantization.bits == 4), highlight=False)
    if accelerator.num_processes > 1:
        console.print(f"{accelerator.num_processes} processes ({accelerator.distributed_type.value}), each on its own "
                      "share of the batches", highlight=False)
    load_peak = peak_memory_mb()
    reset_peak_memory()

    collate = make_collator(tokenizer, packing=packed, task=recipe.model.task, objective=objective)
    sampler = Batches(len(train_rows), recipe.train.batch_size, recipe.train.seed,
                      rank=accelerator.process_index, world=accelerator.num_processes)
    optimizer = build_optimizer(param_groups(model, recipe.adapter, recipe.train.lr, recipe.train.weight_decay,
                                              saved_lr=recipe.train.modules_to_save_lr), recipe.train)
    model, optimizer = accelerator.prepare(model, optimizer)
    scheduler = build_scheduler(optimizer, recipe.train)
    unwrapped = accelerator.unwrap_model(model)
    private = PrivateSGD(unwrapped, optimizer, plan, rows=train_rows, collate=collate,
                         batch_size=recipe.train.batch_size, device=accelerator.device) if plan else None
    if plan:
        console.print(f"private (DP-SGD): noise multiplier {plan.noise_multiplier:.4g}, sampling rate "
                      f"{plan.sample_rate:.4g} (expected batch {plan.expected_batch} of {plan.rows} rows), per-example "
                      f"clip {plan.max_grad_norm:g}; {plan.steps} steps spend epsilon {plan.epsilon_at_end:.3f} at "
                      f"delta {plan.delta:.3g} ({plan.accountant})", highlight=False)
    eval_bs = recipe.eval.batch_size or recipe.train.batch_size
    reference = choose_reference(recipe, unwrapped, send_to_device(collate(train_rows[:2]), accelerator.device))
    if reference.mode != "none":
        console.print(reference.summary(), highlight=False)
        recipe = recipe.model_copy(update={"train": recipe.train.model_copy(
            update={"precompute_ref": reference.mode == "precomputed"})})

    meta = Meta(
        peftkit_command=" ".join(sys.argv),
        versions=versions(),
        base=BaseInfo(model=recipe.model.base, resolved=base.source.path_or_id, kind=base.source.kind,
                      fingerprint=base.fingerprint),
        quantization=recipe.model.quantization.model_dump(mode="json"),
        trust_remote_code=recipe.model.trust_remote_code,
        device=str(accelerator.device),
        num_processes=accelerator.num_processes,
        distributed=accelerator.distributed_type.value,
        hardware=hardware.to_dict(),
        precision=precision.to_dict(),
        data=data.report.to_dict(),
        params={"trainable": params.trainable, "total": params.total},
        gradient_checkpointing={"enabled": gc.enabled, "why": gc.why},
        packing=packed,
        objective=objective,
        reference=reference.to_dict() if reference.mode != "none" else {},
        init_from=recipe.adapter.init_from,
        batch_size=batch.to_dict() if batch else {},
        privacy=plan.to_dict() if plan else {},
    )
    if ranks.main:  # the resolved recipe: every default filled in, every `auto` as chosen here
        write_atomic(out / "recipe.yaml", recipe_to_yaml(recipe))
        write_record(out / "meta.json", meta)

    # loss only; generation pads
    eval_collate = make_collator(tokenizer, packing=packed, task=recipe.model.task, objective=objective)
    train_ref, eval_ref = build_references(
        reference, unwrapped, train_rows=train_rows, eval_rows=eval_rows, recipe=recipe, collate=collate,
        batch_size=eval_bs, device=accelerator.device, world=accelerator.num_processes, run_dir=out,
        resumed=found is not None, main=ranks.main)
    preference = (recipe.train, eval_ref) if objective != "sft" else None

    runlog = RunLog(accelerator, recipe, out, main=ranks.main)  # curve.jsonl + train.report_to's trackers

    def score(label: str):
        m = measure(unwrapped, tokenizer, eval_rows, recipe.eval, collate=eval_collate, batch_size=eval_bs,
                    device=accelerator.device, stop_token_ids=data.stop_token_ids, num_labels=num_labels,
                    preference=preference)
        shown = "  ".join(f"{k} {v:.4f}" for k, v in m.metrics.items())
        console.print(f"eval {label}: {shown}  ({m.examples} examples, {m.seconds:.1f}s)", highlight=False)
        runlog.eval(label, m.metrics, state.step)
        return m

    state, extra, resumed_from = FitState(), {}, None
    if found:
        state, extra = load_checkpoint(found[0], found[1], unwrapped, optimizer, scheduler, accelerator.scaler,
                                       rank=accelerator.process_index)
        resumed_from = state.step
        if private:  # the accountant continues from the checkpoint's history: the same epsilon as without a stop
            private.load_state_dict(extra.pop("privacy"))
        console.print(f"resuming from {found[0]} (step {state.step})", highlight=False)
    elif recipe.eval.before:
        m = score("before")
        extra = {"before": m.metrics, "before_s": m.seconds}

    def checkpoint(s: FitState) -> None:
        try:
            save_checkpoint(out / "checkpoints", unwrapped, optimizer, scheduler, s,
                            extra={**extra, "privacy": private.state_dict()} if private else extra,
                            keep=recipe.train.keep_checkpoints, scaler=accelerator.scaler, ranks=ranks)
        except OSError as exc:  # disk full, quota, permissions: the previous checkpoint is untouched
            raise TrainingAborted(
                f"cannot write the step-{s.step} checkpoint in {out / 'checkpoints'} ({exc.strerror or exc}); "
                "earlier checkpoints are intact"
            ) from None

    eval_peak = peak_memory_mb()
    reset_peak_memory()
    sampler.start_at(state.micro_batches)
    batches = iter(DataLoader(train_rows, batch_sampler=sampler, collate_fn=collate))
    with GracefulStop() as stop, TrainProgress(recipe.train.max_steps, console, log_every=recipe.train.log_every,
                                                start=state.step) as bar:
        def on_step(log):
            bar.update(log)
            if state.curve and state.curve[-1]["step"] == log.step:  # a logged step
                runlog.step(log, state.curve[-1])

        fit(model, optimizer, scheduler, batches, accelerator, recipe.train, state, on_step=on_step,
            checkpoint=checkpoint, should_stop=stop, reference=train_ref, privacy=private)
    spent = None
    if private:
        private.close()  # the per-example hooks come off before eval and saving
        spent = "train.privacy: the next step would spend more than the target epsilon" if private.exhausted() else None
    train_peak = peak_memory_mb()
    reset_peak_memory()
    if state.step < recipe.train.max_steps:  # fit stops early only when some process was asked to
        checkpoint(state)
        runlog.close()
        raise TrainingAborted(
            f"{stop.requested or spent or 'stop requested by another process'} at step {state.step}: checkpoint "
            f"written; resume with: peftkit train --resume {out}"
        )
    after = score("after")

    after_peak = peak_memory_mb()
    if ranks.main:
        unwrapped.save_pretrained(out / "adapter", safe_serialization=True)
        tokenizer.save_pretrained(out / "adapter")
    wall = time.perf_counter() - t_start
    eval_s = extra.get("before_s", 0.0) + after.seconds
    metrics = Metrics(
        train=TrainMetrics(
            steps=state.step,
            final_loss=state.curve[-1]["loss"] if state.curve else None,
            loss_curve=state.curve,
            tokens=state.tokens,
            trained_tokens=state.trained_tokens,
            tokens_per_s=state.tokens / max(state.train_s, 1e-9),
            trained_tokens_per_s=state.trained_tokens / max(state.train_s, 1e-9),
            train_s=state.train_s,
            wall_s=wall,
            eval_share=eval_s / max(wall, 1e-9),
            peak_memory_mb=max(load_peak[0], eval_peak[0], train_peak[0], after_peak[0]),
            peak_memory={"kind": train_peak[1], "load_mb": load_peak[0], "eval_before_mb": eval_peak[0],
                         "train_mb": train_peak[0], "eval_after_mb": after_peak[0]},
            skipped_nonfinite=state.skipped,
            fp16_overflow_steps=state.overflows,
            privacy={**plan.to_dict(), "epsilon": private.epsilon(), "steps_taken": state.step} if plan else {},
        ),
        eval=EvalMetrics(before=extra.get("before"), after=after.metrics, examples=after.examples,
                         samples_after=list(after.samples)),
    )
    if ranks.main:
        write_record(out / "metrics.json", metrics)
    runlog.close()
    ranks.wait()  # no process returns before the run directory is complete
    console.print(f"run directory: {out}", highlight=False)
    return RunResult(run_dir=out, metrics=metrics, params=params, resumed_from=resumed_from, main=ranks.main)
