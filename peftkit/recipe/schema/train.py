"""`train:` — the optimisation loop."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ._base import Section
from .privacy import PrivacySpec

Objective = Literal["sft", "dpo", "ipo", "orpo", "simpo", "kto"]
PAIRED_OBJECTIVES = ("dpo", "ipo", "orpo", "simpo")  # read chosen/rejected pairs
REFERENCE_OBJECTIVES = ("dpo", "ipo", "kto")  # compare the policy with a reference model
DEFAULT_BETA = {"dpo": 0.1, "ipo": 0.1, "orpo": 0.1, "simpo": 2.0, "kto": 0.1}

# Which objectives read each train.preference key (a key another objective does not read is refused when set).
PREFERENCE_READ_BY: dict[str, tuple[str, ...]] = {
    "beta": ("dpo", "ipo", "orpo", "simpo", "kto"),
    "label_smoothing": ("dpo", "simpo"),
    "gamma": ("simpo",),
    "desirable_weight": ("kto",),
    "undesirable_weight": ("kto",),
}


class PreferenceSpec(Section):
    beta: float | None = Field(
        None, gt=0, le=100, description="dpo/ipo/kto: strength of the pull towards the reference (ipo: its tau); "
        "orpo: weight of the odds-ratio term (lambda); simpo: reward scale; null: dpo/ipo/orpo/kto 0.1, simpo 2.0"
    )
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="dpo / simpo: assumed share of flipped pairs")
    gamma: float = Field(1.0, ge=0, description="simpo: target reward margin (the paper's gamma)")
    desirable_weight: float = Field(1.0, gt=0, description="kto: weight of desirable answers' loss")
    undesirable_weight: float = Field(1.0, gt=0, description="kto: weight of undesirable answers' loss")

    def beta_for(self, objective: str) -> float:
        return self.beta if self.beta is not None else DEFAULT_BETA[objective]


class TrainSpec(Section):
    max_steps: int = Field(100, ge=1, description="optimizer steps")
    batch_size: int | Literal["auto"] = Field(
        8, description="examples per micro-batch; auto: the largest that fits this device's memory, found by "
        "measuring a few real steps on the longest examples (peftkit.training.batch_size) among the divisors of "
        "effective_batch, with grad_accum = effective_batch / batch_size; the run records what was measured"
    )
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step; with batch_size auto it is "
                            "chosen (effective_batch / the batch found), whatever is written here")
    effective_batch: int | None = Field(
        None, ge=1, description="examples per optimizer step (per process): batch_size x grad_accum. Needed with "
        "batch_size auto, which keeps it; with a number for batch_size it may be stated and must then agree"
    )
    lr: float = Field(2e-4, gt=0, le=1.0, description="peak learning rate")
    modules_to_save_lr: float | None = Field(
        None, gt=0, le=1.0, description="peak lr of the modules trained in full (adapter.modules_to_save, e.g. a "
        "fresh classifier head, which starts from nothing and needs far larger steps than the adapter); the "
        "schedule scales it like lr; null: lr"
    )
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0, description="linear warmup steps (capped at max_steps, so short runs need no edit)")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="decay after warmup")
    max_grad_norm: float | None = Field(1.0, gt=0, description="clip gradients to this norm; null disables")
    optimizer: Literal["adamw", "adamw_8bit", "paged_adamw_8bit", "sgd"] = Field(
        "adamw", description="adamw (torch, fp32 state); 8-bit / paged variants need CUDA bitsandbytes"
    )
    seed: int = Field(42, description="seeds python, numpy, torch and data order")
    log_every: int = Field(10, ge=1, description="steps between logged loss points")
    report_to: tuple[Literal["tensorboard", "trackio", "wandb", "mlflow"], ...] = Field(
        (), description="also log each logged step (loss, lr, grad norm, tokens/s, trained tokens, memory), eval "
        "before/after and the resolved recipe through Accelerate's trackers; tensorboard writes under "
        "<run>/logs/, trackio to its local store (TRACKIO_DIR); each needs its extra, e.g. "
        "pip install 'peftkit[tensorboard]'. The run directory's curve.jsonl and metrics.json are written anyway"
    )
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto", description="recompute activations: less memory, slower steps; auto: on when a batch_size x "
        "max_length batch's activations would take over a quarter of the device's memory (peftkit.training.recompute)"
    )
    checkpoint_offload: bool = Field(
        False, description="CUDA: keep the activations checkpointing saves in pinned host memory (frees GPU memory, "
        "slower steps); needs gradient_checkpointing on or auto"
    )
    checkpoint_every: int | None = Field(None, ge=1, description="steps between resumable checkpoints; null: none")
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept on disk")
    resume: Literal["never", "auto"] = Field(
        "never", description="auto: continue from the newest valid checkpoint in the run directory"
    )
    skip_nonfinite: int = Field(0, ge=0, description="NaN/inf steps skipped (and counted) before the run stops")
    selective_logits: bool = Field(
        True, description="project to the vocabulary only at trained positions (same loss, less compute)"
    )
    logits_chunk: int | None = Field(
        256, ge=1, description="with selective_logits: project and score this many trained positions at a time, "
        "recomputed in the backward, so one chunk of vocabulary logits is alive at once; null: all at once"
    )
    objective: Objective = Field(
        "sft", description="sft (next-token loss on responses) | dpo | ipo | orpo | simpo | kto (preference data: "
        "data.format preference, or unpaired_preference for kto)"
    )
    preference: PreferenceSpec = Field(default_factory=PreferenceSpec, description="preference objectives' settings")
    precompute_ref: bool | Literal["auto"] = Field(
        "auto", description="dpo/ipo/kto: score the reference once before training and keep it in the run directory "
        "(true), or on the fly with the adapter switched off (false); auto: precompute when the adapter does not "
        "start as the bare base (adapter.init_from, pissa/olora/loftq inits), else on the fly"
    )
    privacy: PrivacySpec | None = Field(
        None, description="differentially private training (DP-SGD through Opacus): per-example clipped, noised "
        "adapter gradients on Poisson-sampled batches, with the (epsilon, delta) spent recorded; null: not private"
    )
    canaries: int = Field(
        0, ge=0, le=10000, description="for peftkit eval --privacy-audit: this many random canary rows (random "
        "tokens with a random label or answer, from seed) are mixed into the training rows and as many more held "
        "back; the audit tells them apart by their loss. 0: none"
    )
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto", description="Accelerate autocast; 'no' (or false) keeps adapter math fp32 on top of the base dtype; "
        "auto: bf16 on a bf16 GPU, fp16 with a loss scaler on an older one, no on CPU"
    )

    @field_validator("batch_size")
    @classmethod
    def _batch_at_least_one(cls, value):
        if value != "auto" and value < 1:
            raise ValueError("must be at least 1, or auto")
        return value

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _plain_no(cls, value):
        # YAML 1.1 reads a bare `no` (and `off`, `false`) as False; they all mean what the user wrote
        return "no" if value is False else value

    @model_validator(mode="after")
    def _preference_keys_read(self):
        given = self.preference.model_fields_set
        for key, readers in PREFERENCE_READ_BY.items():
            if key in given and self.objective not in readers and \
                    getattr(self.preference, key) != PreferenceSpec.model_fields[key].default:
                raise ValueError(f"preference.{key} is read by objective {'/'.join(readers)}, not "
                                 f"{self.objective}: remove it")
        if self.precompute_ref is True and self.objective not in REFERENCE_OBJECTIVES:
            raise ValueError(f"precompute_ref: objective {self.objective} uses no reference model; remove it")
        return self

    @model_validator(mode="after")
    def _effective_batch_agrees(self):
        if self.batch_size == "auto" and self.effective_batch is None:
            raise ValueError("batch_size auto keeps the effective batch the recipe asks for: set effective_batch "
                             "(examples per optimizer step, e.g. the old batch_size x grad_accum)")
        if self.batch_size != "auto" and self.effective_batch not in (None, self.batch_size * self.grad_accum):
            raise ValueError(f"effective_batch {self.effective_batch} is not batch_size {self.batch_size} x "
                             f"grad_accum {self.grad_accum}: fix one, or set batch_size auto")
        return self

    @model_validator(mode="after")
    def _offload_needs_checkpointing(self):
        if self.checkpoint_offload and self.gradient_checkpointing is False:
            raise ValueError("checkpoint_offload holds checkpointed activations: set gradient_checkpointing to "
                             "true or auto, or checkpoint_offload to false")
        return self
