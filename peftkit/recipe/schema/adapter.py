"""`adapter:` — the PEFT method trained on top of the frozen base, and the options each method reads.

One flat section: `method` picks the tuner, the other keys are its options. A key the chosen method does not
read is refused when it differs from its default (naming the key and the methods that read it), so nobody
believes an option took effect; its default value is accepted, so resolved recipes (every key written out)
and switching methods with `adapter.method=...` keep working.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from ._base import Section
from .data import DataSpec
from .model import ModelSpec
from .train import TrainSpec

TargetPreset = Literal["all-linear", "attention", "mlp"]
Method = Literal[
    "lora", "dora", "rslora", "loha", "lokr", "vera", "adalora", "ia3", "oft", "boft", "prompt_tuning", "prefix_tuning"
]
LoraInit = Literal["default", "gaussian", "pissa", "olora", "loftq"]

LORA_FAMILY = ("lora", "dora", "rslora")
PROMPT_LEARNING = ("prompt_tuning", "prefix_tuning")
ALL_METHODS: tuple[str, ...] = Method.__args__
WEIGHT_METHODS = tuple(m for m in ALL_METHODS if m not in PROMPT_LEARNING)

# Which methods read each option (keys absent here are read by every method).
READ_BY: dict[str, tuple[str, ...]] = {
    "rank": (*LORA_FAMILY, "loha", "lokr", "vera", "adalora"),
    "alpha": (*LORA_FAMILY, "loha", "lokr", "adalora"),
    "dropout": (*LORA_FAMILY, "adalora", "vera"),
    "targets": WEIGHT_METHODS,
    "layers": WEIGHT_METHODS,
    "init": LORA_FAMILY,
    "lora_plus_ratio": LORA_FAMILY,
    "adalora_init_rank": ("adalora",),
    "adalora_tinit": ("adalora",),
    "adalora_tfinal": ("adalora",),
    "adalora_delta_t": ("adalora",),
    "block_size": ("oft", "boft"),
    "butterfly_factor": ("boft",),
    "num_virtual_tokens": PROMPT_LEARNING,
}


class AdapterSpec(Section):
    method: Method = Field(
        "lora",
        description="lora | dora (LoRA + magnitude/direction split) | rslora (LoRA scaled alpha/sqrt(rank)) | loha | "
        "lokr | vera | adalora | ia3 | oft | boft | prompt_tuning | prefix_tuning",
    )
    rank: int = Field(
        16, ge=1, le=4096,
        description="rank r (LoRA family, LoHa, LoKr, VeRA's shared projections; AdaLoRA: average rank kept)",
    )
    alpha: float = Field(32.0, gt=0, description="scale numerator: scale = alpha / rank (rslora: alpha / sqrt(rank))")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="dropout on the adapter input (LoRA family, AdaLoRA, VeRA)")
    targets: TargetPreset | tuple[str, ...] = Field(
        "all-linear", description="all-linear, attention, mlp, or a list of module names (not prompt/prefix tuning)"
    )
    layers: tuple[int, ...] | None = Field(
        None, description="indices of the transformer layers to adapt (layers_to_transform); null: all"
    )
    modules_to_save: tuple[str, ...] = Field((), description="extra modules trained in full and saved (e.g. score)")
    init: LoraInit = Field(
        "default",
        description="LoRA family start: default (B=0), gaussian, pissa / olora (principal directions; the base keeps "
        "the residual, recomputed when the adapter loads), loftq (4-bit base: B·A starts at the quantization error)",
    )
    lora_plus_ratio: float | None = Field(
        None, gt=0, le=1024, description="LoRA+: B matrices learn at this multiple of train.lr (paper: 16); null: off"
    )
    adalora_init_rank: int | None = Field(
        None, ge=1, le=4096, description="AdaLoRA: rank every layer starts with (null: 1.5 x rank)"
    )
    adalora_tinit: int = Field(0, ge=0, description="AdaLoRA: steps before rank pruning starts")
    adalora_tfinal: int = Field(0, ge=0, description="AdaLoRA: last steps trained at the final ranks")
    adalora_delta_t: int = Field(1, ge=1, description="AdaLoRA: steps between rank re-allocations")
    block_size: int = Field(
        32, ge=1, le=65536, description="OFT / BOFT: size of each orthogonal block (must divide in_features)"
    )
    butterfly_factor: int = Field(1, ge=1, le=16, description="BOFT: butterfly factors (1 = block-diagonal OFT)")
    num_virtual_tokens: int = Field(20, ge=1, le=4096, description="prompt / prefix tuning: learned virtual tokens")
    init_from: str | None = Field(
        None, description="a run directory (or its adapter folder) whose trained adapter this run starts from, e.g. "
        "DPO on top of an SFT run; its method and shape are used (the other adapter keys must match or stay default)"
    )

    @field_validator("targets")
    @classmethod
    def _non_empty(cls, v):
        if isinstance(v, tuple) and not v:
            raise ValueError("needs at least one module name, or a preset: all-linear, attention, mlp")
        return v

    @field_validator("layers")
    @classmethod
    def _layer_indices(cls, v):
        if v is not None and (not v or min(v) < 0):
            raise ValueError("list layer indices from 0 (or null for every layer)")
        return v

    @field_validator(*READ_BY)
    @classmethod
    def _read_by_method(cls, v, info: ValidationInfo):
        method = info.data.get("method")  # absent when `method` itself was invalid: reported there
        readers = READ_BY[info.field_name]
        if method is None or method in readers:
            return v
        default = cls.model_fields[info.field_name].default
        if v == default or (info.field_name == "dropout" and v == 0):  # no dropout is what the method does anyway
            return v
        raise ValueError(f"only for method {'/'.join(readers)}, not {method}: remove it")

    @field_validator("adalora_init_rank")
    @classmethod
    def _prunes_down(cls, v, info: ValidationInfo):
        rank = info.data.get("rank")
        if v is not None and rank is not None and v < rank:
            raise ValueError(f"AdaLoRA prunes from adalora_init_rank down to rank ({rank}): use a value >= rank")
        return v

    @field_validator("init")
    @classmethod
    def _loftq_is_plain_lora(cls, v, info: ValidationInfo):
        if v == "loftq" and info.data.get("method") == "dora":
            # DoRA's magnitude is computed from the weights before LoftQ would move B·A
            raise ValueError("loftq applies to method lora or rslora, not dora")
        return v


def compatibility_problems(
    adapter: AdapterSpec, model: ModelSpec, data: DataSpec, train: TrainSpec
) -> list[tuple[str, str, object]]:
    """Rules across sections, as (dotted key, message saying what to change, value). Checked against PEFT 0.21.2
    and bitsandbytes 0.50.2: each refused pair fails inside them (tests/adapters/test_quantized.py shows it)."""
    bits, method, init = model.quantization.bits, adapter.method, adapter.init
    out: list[tuple[str, str, object]] = []

    def refuse(key: str, value: object, message: str) -> None:
        out.append((key, message, value))

    if bits == 4 and method in ("loha", "lokr"):
        refuse("adapter.method", method, (
            f"{method} cannot wrap 4-bit (Linear4bit) layers: set model.quantization.bits to 8 or null, "
            "or use lora, dora, ia3, vera, adalora, oft or boft"
        ))
    if bits == 8 and method == "dora":
        refuse("adapter.method", method, (
            "dora cannot wrap 8-bit (Linear8bitLt) layers: set model.quantization.bits to 4 or null, or use method lora"
        ))
    # `auto` is checked again once resolved for the machine (peftkit.hardware.resolve_precision)
    if bits is not None and model.dtype not in ("float32", "auto") and (
        method == "ia3" or (method == "adalora" and bits == 8)
    ):
        refuse("adapter.method", method, (
            f"{method} on a {bits}-bit base hands float32 activations to the {model.dtype} layers after it: "
            "set model.dtype to float32, or use method lora"
        ))
    if bits == 4 and method == "adalora":
        # measured: once AdaLoRA has pruned ranks, its saved adapter reloaded on the 4-bit base gave logits up to
        # 0.09 away from the trained model's (fp32 compute); on 8-bit and un-quantized bases they match to 1e-5
        refuse("adapter.method", method, (
            "adalora's rank-pruned adapter does not reload exactly on a 4-bit base: set model.quantization.bits "
            "to 8 (with model.dtype float32) or null, or use method lora"
        ))
    if method in PROMPT_LEARNING and data.packing is True:
        refuse("adapter.method", method, (
            f"{method} cannot keep packed examples apart (PEFT drops position_ids): set data.packing to false"
        ))
    if bits is not None and init == "pissa":
        refuse("adapter.init", init, (
            "pissa rewrites the base weights and needs them un-quantized: set model.quantization.bits to null, "
            + ("or use init loftq (olora re-quantizes the 4-bit residual and starts further from the base: "
               "benchmarks/results/adapters.md)" if bits == 4 else "or use init olora")
        ))
    if init == "loftq" and bits != 4:
        refuse("adapter.init", init, (
            "loftq fits the adapter to the 4-bit quantization error: set model.quantization.bits to 4, "
            "or use another init"
        ))
    if method == "adalora" and adapter.adalora_tinit + adapter.adalora_tfinal >= train.max_steps:
        refuse("adapter.adalora_tinit", adapter.adalora_tinit, (
            f"adalora_tinit + adalora_tfinal must leave steps to prune ranks in train.max_steps "
            f"({train.max_steps}): lower them or raise train.max_steps"
        ))
    return out
