"""README.md for an exported adapter: base, recipe, data, metrics, and how to load it."""

from __future__ import annotations

from ..recipe import recipe_to_yaml
from ..rundir import BaseInfo, RunInfo


def adapter_card(run: RunInfo) -> str:
    recipe, meta, metrics = run.recipe, run.meta, run.metrics
    base = meta.base
    q = recipe.model.quantization
    lines = [
        "---",
        "library_name: peft",
        f"base_model: {recipe.model.base}",
        "tags: [peft, lora, peftkit]",
        "---",
        f"# {recipe.name}",
        "",
        recipe.description or "A LoRA adapter trained with peftkit.",
        "",
        "## Base model",
        f"- model: `{recipe.model.base}` (resolved at training to `{base.resolved}`)",
        f"- weight fingerprint: `{base.fingerprint or 'not recorded (hub model)'}`",
        f"- loaded as: {_loading(recipe)}",
        "",
        "## Adapter",
        (f"- {recipe.adapter.method}, rank {recipe.adapter.rank}, alpha {recipe.adapter.alpha:g}, "
         f"dropout {recipe.adapter.dropout:g}, targets `{_targets(recipe.adapter.targets)}`"),
        _params_line(meta.params.get("trainable")),
        "",
        "## Data",
        *_data_lines(recipe, meta.data),
        "",
        "## Training",
        *_train_lines(recipe, metrics.train.model_dump() if metrics else {}),
        *_objective_lines(recipe, meta),
        *_privacy_lines(meta.privacy, metrics.train.privacy if metrics else {}),
        "",
        "## Evaluation (held-out rows)",
        *_eval_lines(metrics.eval.model_dump() if metrics else {}),
        "",
        "## How to load",
        "```python",
        "import torch",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM, AutoTokenizer" + (", BitsAndBytesConfig" if q.bits else ""),
        "",
        f'base = AutoModelForCausalLM.from_pretrained("{_base_hint(recipe, base)}"{_load_kwargs(recipe)})',
        'model = PeftModel.from_pretrained(base, "path/to/this/folder")',
        'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")  # carries the chat template used',
        "```",
        ("Load the base the way it was trained (the quantization above): the adapter learned to correct those "
         "weights. To get a standalone model, `peftkit merge RUN_DIR` merges it into the dequantized base and "
         "checks the result."),
        "",
        "## Recipe",
        "```yaml",
        recipe_to_yaml(recipe).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def _loading(recipe) -> str:
    q = recipe.model.quantization
    if q.bits == 4:
        return (f"4-bit {q.quant_type} (double quant {'on' if q.double_quant else 'off'}, compute "
                f"{q.compute_dtype}), other layers {recipe.model.dtype}")
    if q.bits == 8:
        return f"8-bit LLM.int8, other layers {recipe.model.dtype}"
    return recipe.model.dtype


def _params_line(trainable) -> str:
    return f"- trainable parameters: {trainable:,}" if isinstance(trainable, int) else "- trainable parameters: ?"


def _targets(targets) -> str:
    return targets if isinstance(targets, str) else ", ".join(targets)


def _data_lines(recipe, report: dict) -> list[str]:
    d = recipe.data
    read = report.get("sources") or [d.path, *([d.eval_path] if d.eval_path else [])]
    public = f" (public source: hub dataset `{d.hub.id}`)" if d.hub else ""
    lines = [f"- format `{d.format}`, read from " + ", ".join(f"`{s}`" for s in read) + public,
             (f"- prompt template: {report.get('template') or d.chat_template}, max length {d.max_length}, "
              f"{'trained on inputs too' if d.train_on_inputs else 'trained on responses only'}")]
    for split in ("train", "eval"):
        s = report.get(split) or {}
        if s:
            lines.append(f"- {split}: {s.get('examples', '?')} examples, {s.get('tokens', '?')} tokens "
                         f"({s.get('trained_tokens', '?')} trained), {s.get('truncated', 0)} truncated")
    return lines


def _train_lines(recipe, train: dict) -> list[str]:
    t = recipe.train
    lines = [(f"- {t.max_steps} steps, batch {t.batch_size} x {t.grad_accum}, lr {t.lr:g} ({t.schedule}, "
              f"warmup {t.warmup_steps}), seed {t.seed}")]
    if train:
        loss = train.get("final_loss")
        lines.append(f"- final loss {loss:.4f}" if isinstance(loss, (int, float)) else "- final loss: n/a")
        if isinstance(train.get("wall_s"), (int, float)):
            lines.append(f"- wall time {train['wall_s']:.0f} s")
    return lines


def _objective_lines(recipe, meta) -> list[str]:
    """Preference runs: which objective, with what strength, against which reference, started from what."""
    t = recipe.train
    if t.objective == "sft":
        return []
    lines = [f"- objective {t.objective}, beta {t.preference.beta_for(t.objective):g}"]
    ref = meta.reference or {}
    if ref.get("mode") in ("adapter_off", "precomputed"):
        how = "precomputed before training" if ref["mode"] == "precomputed" else "the adapter switched off"
        lines.append(f"- reference model: {ref.get('model')} ({how})")
    if meta.init_from:
        lines.append(f"- started from the adapter of `{meta.init_from}`")
    return lines


def _privacy_lines(plan: dict, spent: dict) -> list[str]:
    """train.privacy: the (epsilon, delta) spent, how, and what it covers (peftkit.privacy.accounting)."""
    if not plan:
        return []
    epsilon = spent.get("epsilon")
    return [
        "",
        "## Privacy",
        (f"- differentially private: (epsilon {epsilon:.3f}, delta {plan['delta']:.3g})" if epsilon is not None
         else f"- differentially private, planned epsilon {plan['epsilon_at_end']:.3f} at delta {plan['delta']:.3g}"),
        (f"- how: DP-SGD through Opacus: Poisson sampling at rate {plan['sample_rate']:.4g} (expected batch "
         f"{plan['expected_batch']} of {plan['rows']} rows), each example's adapter gradient clipped to "
         f"{plan['max_grad_norm']:g}, Gaussian noise multiplier {plan['noise_multiplier']:.4g}, "
         f"{spent.get('steps_taken', plan['steps'])} steps, {plan['accountant']} accountant"),
        f"- covers: {plan['covers']}",
    ]


def _eval_lines(ev: dict) -> list[str]:
    after = ev.get("after") or {}
    if not after:
        return ["- not measured"]
    before = ev.get("before") or {}
    lines = ["| metric | before | after |", "|---|---|---|"]
    for name, value in after.items():
        b = before.get(name)
        lines.append(f"| {name} | {b:.4f} | {value:.4f} |" if isinstance(b, (int, float))
                     else f"| {name} | - | {value:.4f} |")
    if ev.get("examples"):
        lines.append(f"\n{ev['examples']} held-out examples.")
    return lines


def _base_hint(recipe, base: BaseInfo) -> str:
    # A zoo alias is not a hub id: point at the folder peftkit converted it into.
    return base.resolved or recipe.model.base


def _load_kwargs(recipe) -> str:
    q = recipe.model.quantization
    if q.bits == 4:
        return (f",\n    quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=\"{q.quant_type}\", "
                f"bnb_4bit_use_double_quant={q.double_quant},\n        bnb_4bit_compute_dtype=torch.{q.compute_dtype})")
    if q.bits == 8:
        return ",\n    quantization_config=BitsAndBytesConfig(load_in_8bit=True)"
    return f", dtype=torch.{recipe.model.dtype}"
