"""`peftkit eval`: the base model, each run's adapter, and the merged model when present, scored on the same
held-out examples of the first run's recipe, in one table (terminal, JSON, markdown) with sample generations."""

from __future__ import annotations

import json
from pathlib import Path

from ..adapters.attach import stacked_adapters
from ..data import make_collator
from ..data.collate import with_kl_partners
from ..data.prepare import prepare_data
from ..errors import PeftkitError
from ..modeling.load import load_base
from ..modeling.objective import ModelReference, saved_reference
from ..recipe.schema.train import REFERENCE_OBJECTIVES
from ..recipe import Recipe, load_recipe
from ..rundir import EvalRecord, ModelScore, RunInfo, read_run, write_atomic, write_record
from .measure import Measurement, measure


def _runs(targets: list[str]) -> tuple[Recipe, list[RunInfo]]:
    first = Path(targets[0])
    runs = [read_run(t) for t in targets if Path(t).is_dir()]
    if first.is_dir():
        return runs[0].recipe, runs
    if first.is_file():
        return load_recipe(first), runs
    raise PeftkitError(f"{first}: neither a run directory nor a recipe file")


def evaluate_models(targets: list[str], *, merged: bool = True, n_samples: int = 3) -> EvalRecord:
    """targets[0] is a run directory or a recipe (whose data and base define the comparison); the rest are runs."""
    recipe, runs = _runs(targets)
    tokenizer, data = prepare_data(recipe)
    num_labels = len(data.label_names or ()) or None
    base = load_base(recipe.model, num_labels=num_labels, label_names=data.label_names, tokenizer=tokenizer)
    objective = recipe.train.objective
    collate = make_collator(tokenizer, packing=False, task=recipe.model.task, objective=objective)
    batch = recipe.eval.batch_size or recipe.train.batch_size  # eval fits wherever training did
    examples = with_kl_partners(data.eval, recipe.data.max_length) if objective == "kto" else data.eval
    reference_based = objective in REFERENCE_OBJECTIVES

    def score(model, reference=None) -> Measurement:
        preference = (recipe.train, reference) if objective != "sft" else None
        return measure(model, tokenizer, examples, recipe.eval, collate=collate, batch_size=batch,
                       device=next(model.parameters()).device, stop_token_ids=data.stop_token_ids,
                       num_labels=num_labels, n_samples=n_samples, preference=preference)

    def reference_of(run: RunInfo | None, model, adapter_off: bool):
        """A run's own reference: the table it precomputed (e.g. its init_from SFT model), else the base."""
        if not reference_based:
            return None
        saved = saved_reference(run.path, "eval") if run is not None else None
        return saved or ModelReference(model, adapter_off=adapter_off)

    first_run = runs[0] if runs else None
    results: list[tuple[str, str, Measurement]] = [
        ("base", "base", score(base.model, reference_of(first_run, base.model, adapter_off=False)))]
    for run, model in stacked_adapters(base, runs):
        results.append((str(run.path), "adapter", score(model, reference_of(run, model, adapter_off=True))))
    for run in runs if merged else []:
        folder = run.path / "merged"
        if (folder / "config.json").is_file():
            from ..recipe.schema import ModelSpec

            spec = ModelSpec(base=str(folder), task=recipe.model.task, dtype=recipe.model.dtype,
                             attn_implementation=recipe.model.attn_implementation)
            merged_model = load_base(spec).model
            # the merged model has no adapter to switch off: its reference is the run's table or the base
            results.append((str(folder), "merged", score(merged_model, reference_of(run, model, adapter_off=True))))

    rows = tuple(ModelScore(name=name, kind=kind, metrics=m.metrics, seconds=round(m.seconds, 3),
                            predictions=tuple(s["prediction"] for s in m.samples)) for name, kind, m in results)
    first = results[0][2]
    samples = tuple(
        {"prompt": s["prompt"], "reference": s["reference"],
         "predictions": {r.name: r.predictions[i] for r in rows if i < len(r.predictions)}}
        for i, s in enumerate(first.samples[:n_samples])
    )
    return EvalRecord(recipe=recipe.name, examples=first.examples, rows=rows, samples=samples)


def evaluate(targets: list[str], *, merged: bool = True, n_samples: int = 3) -> EvalRecord:
    """evaluate_models, and the table kept as eval.json / eval.md in the first target when it is a run directory
    (the same for `peftkit eval` and the Python API)."""
    table = evaluate_models(targets, merged=merged, n_samples=n_samples)
    if Path(targets[0]).is_dir():
        write_table(table, Path(targets[0]))
    return table


def write_table(table: EvalRecord, folder: Path) -> tuple[Path, Path]:
    write_record(folder / "eval.json", table)
    write_atomic(folder / "eval.md", table.to_markdown())
    return folder / "eval.json", folder / "eval.md"


def table_json(table: EvalRecord) -> str:
    return json.dumps(table.model_dump(mode="json"), indent=2)
