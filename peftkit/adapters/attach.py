"""Wrap the frozen base with the adapter of the recipe's method."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import torch
from peft import PeftConfig, PeftModel, get_peft_model

from ..errors import Problem, RecipeError
from ..modeling.fingerprint import check_same_base
from ..recipe.schema import AdapterSpec
from ..recipe.schema.adapter import LORA_FAMILY
from .loftq import loftq_init
from .methods import peft_config
from .targets import resolve_targets


def _check_block_size(spec: AdapterSpec, model: torch.nn.Module) -> None:
    """OFT would silently round a block size that does not divide a layer's input width; refuse it instead."""
    modules = dict(model.named_modules())
    widths = sorted({modules[name].in_features for name in resolve_targets(spec, model)})
    if all(w % spec.block_size == 0 for w in widths):
        return
    common = math.gcd(*widths)
    fits = [d for d in range(2, common + 1) if common % d == 0]
    raise RecipeError(None, [Problem(
        "adapter.block_size", f"must divide the input width of every target ({', '.join(map(str, widths))}): use "
        f"one of {', '.join(map(str, fits))}", spec.block_size, True,
    )])


def attach_adapter(
    model: torch.nn.Module, spec: AdapterSpec, *, task: str, total_steps: int | None = None
) -> PeftModel:
    """Adapter weights are kept in fp32 whatever the base dtype (bf16 adapters diverge). `total_steps`
    (train.max_steps) is needed by AdaLoRA, whose rank budget follows the training schedule."""
    if spec.method == "boft" and spec.butterfly_factor > 1 and not torch.cuda.is_available():
        # PEFT builds butterflies with a CUDA extension; without one it silently trains factor 1 instead
        raise RecipeError(None, [Problem("adapter.butterfly_factor", "BOFT butterflies need CUDA (PEFT would "
                                         "silently use 1 here): set it to 1 on CPU", spec.butterfly_factor, True)])
    if spec.method in ("oft", "boft"):
        _check_block_size(spec, model)
    if spec.init_from:
        peft_model = _from_run(model, spec)
    else:
        peft_model = _new(model, spec, task, total_steps)
    for name, p in peft_model.named_parameters():
        if ".ranknum." in name:
            # AdaLoRA's rank counter is a constant; PEFT's fp32 upcast of a bf16 model re-creates it as a
            # trainable Parameter, and it is not saved, so training it would make the saved adapter disagree
            p.requires_grad_(False)
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return peft_model


def init_from_dir(spec: AdapterSpec) -> Path:
    """The adapter folder adapter.init_from names: a run directory's adapter/, or an adapter folder itself."""
    folder = Path(spec.init_from)
    for candidate in (folder / "adapter", folder):
        if (candidate / "adapter_config.json").is_file():
            return candidate
    why = ("holds no trained adapter (looked for adapter/adapter_config.json and adapter_config.json)"
           if folder.is_dir() else "no such run directory (train the run it names first)")
    raise RecipeError(None, [Problem("adapter.init_from", why, spec.init_from, True)])


def _from_run(model: torch.nn.Module, spec: AdapterSpec) -> PeftModel:
    folder = init_from_dir(spec)
    config = PeftConfig.from_pretrained(str(folder))
    kind = config.peft_type.value.lower()
    family = "lora" if spec.method in LORA_FAMILY else spec.method
    if kind != family:
        raise RecipeError(None, [Problem("adapter.init_from", f"its adapter is {kind}, the recipe's adapter.method "
                                         f"is {spec.method}: set adapter.method: {kind}", spec.init_from, True)])
    return PeftModel.from_pretrained(model, str(folder), is_trainable=True)


def _new(model: torch.nn.Module, spec: AdapterSpec, task: str, total_steps: int | None) -> PeftModel:
    config = peft_config(spec, model, task=task, total_steps=total_steps)
    try:
        peft_model = get_peft_model(model, config)
    except (ValueError, TypeError, RuntimeError) as exc:
        # e.g. a BOFT block count its butterflies cannot split: PEFT's reason, on one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RecipeError(None, [Problem("adapter.method", f"PEFT cannot attach it to this model: {first}",
                                         spec.method, True)]) from None
    if spec.init == "loftq":
        loftq_init(peft_model)
    return peft_model


def stacked_adapters(base, runs) -> Iterator[tuple[object, torch.nn.Module]]:
    """(run, model) for each run directory's adapter loaded over one loaded base (peftkit.modeling.load.LoadedBase),
    each checked to be trained on that base and made the active adapter in turn: one copy of the base weights
    serves every run."""
    model = base.model
    for i, run in enumerate(runs):
        check_same_base(run.meta.base.fingerprint, base.fingerprint, what=base.source.path_or_id, where=str(run.path))
        name = f"a{i}"
        if i == 0:
            model = PeftModel.from_pretrained(base.model, run.adapter_dir, adapter_name=name)
        else:
            model.load_adapter(run.adapter_dir, adapter_name=name)
        model.set_adapter(name)
        yield run, model
