"""The reference peer: TRL's SFTTrainer + a PEFT LoraConfig + bitsandbytes, written as TRL's QLoRA guide does
(load the quantized base, hand it and a LoraConfig to the trainer), on exactly peftkit's tokenized examples.

What is set to match the recipe: base and its dtype, quantization, adapter shape (rank, alpha, dropout, the same
target modules, modules_to_save), the examples with their response-only labels, max length, batch, accumulation,
steps, lr, schedule, warm-up, weight decay, clipping, optimizer and seed. Everything else is TRL's default (gradient
checkpointing on, bf16 autocast, bf16 adapter weights on a quantized base, sdpa attention, no packing, logits at every
position). Measurement-only changes: logging every step (TRL logs every 10) and a step clock / token counter.

Two more changes, both needed for the peer to run at all here:
- `use_cpu=True` on a machine without CUDA: transformers refuses TRL's default bf16 on CPU otherwise.
- keep_cpu_4bit_differentiable: on AVX512-BF16 CPUs bitsandbytes repacks a 4-bit weight for an inference kernel
  that has no backward the first time the layer runs in eval mode, after which gradients are silently wrong.
  peftkit's loader switches that off; it is switched off here too, so the peer is not sabotaged.
Classification recipes: SFTTrainer is causal-LM only, so the peer is transformers' Trainer (which SFTTrainer
extends) with its own defaults.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig, TaskType, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from trl import SFTConfig, SFTTrainer

from ..adapters import resolve_targets
from ..data import make_collator
from ..data.prepare import prepare_data
from ..evaluation.measure import eval_loss
from ..hardware import peak_memory_mb
from ..modeling.load import DTYPES, bnb_config, keep_cpu_4bit_differentiable
from ..modeling.tokens import trained_tokens
from ..modeling.zoo import resolve_base
from ..recipe import Recipe
from .measure import process_age_s
from .peer import LORA_INITS, OPTIMIZERS
from .record import SCHEDULES, RouteRun, canonical_base, examples_digest


class StepClock(TrainerCallback):
    """Per-step cumulative time, tokens and loss. Tokens are counted as each micro-batch enters training_step."""

    def __init__(self):
        self.t0 = 0.0
        self.elapsed: list[float] = []
        self.tokens: list[int] = []
        self.trained: list[int] = []
        self.loss: dict[int, float] = {}
        self._tokens = self._trained = 0

    def count(self, inputs: dict) -> None:
        mask, labels = inputs.get("attention_mask"), inputs["labels"]
        self._tokens += int(mask.sum()) if mask is not None and mask.dim() == 2 else int(inputs["input_ids"].numel())
        self._trained += trained_tokens(labels)

    def on_train_begin(self, args, state, control, **kwargs):
        self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.elapsed.append(time.perf_counter() - self.t0)
        self.tokens.append(self._tokens)
        self.trained.append(self._trained)
        self._tokens = self._trained = 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.loss[state.global_step] = float(logs["loss"])


class _Counted:
    """Hands every training micro-batch to the clock before the trainer's own training_step."""

    clock: StepClock

    def training_step(self, model, inputs, *args, **kwargs):
        self.clock.count(inputs)
        return super().training_step(model, inputs, *args, **kwargs)


class CountedSFTTrainer(_Counted, SFTTrainer):
    pass


class CountedTrainer(_Counted, Trainer):
    pass


def lora_config(recipe: Recipe, model: torch.nn.Module) -> LoraConfig:
    a = recipe.adapter
    classify = recipe.model.task == "sequence_classification"
    return LoraConfig(
        r=a.rank, lora_alpha=a.alpha, lora_dropout=a.dropout, target_modules=resolve_targets(a, model),
        modules_to_save=list(a.modules_to_save) or None, use_dora=a.method == "dora", use_rslora=a.method == "rslora",
        init_lora_weights=LORA_INITS[a.init], bias="none",
        task_type=TaskType.SEQ_CLS if classify else TaskType.CAUSAL_LM,
    )


def matched_arguments(recipe: Recipe) -> dict:
    """The recipe's optimisation settings as transformers TrainingArguments fields (every TRL config takes them)."""
    t = recipe.train
    matched = {
        "per_device_train_batch_size": t.batch_size, "gradient_accumulation_steps": t.grad_accum,
        "max_steps": t.max_steps, "learning_rate": t.lr, "lr_scheduler_type": SCHEDULES[t.schedule],
        "warmup_steps": min(t.warmup_steps, t.max_steps), "weight_decay": t.weight_decay,
        "max_grad_norm": t.max_grad_norm or 0.0,  # transformers: 0 = no clipping (peftkit: null)
        "seed": t.seed,
    }
    if OPTIMIZERS[t.optimizer]:
        matched["optim"] = OPTIMIZERS[t.optimizer]
    return matched


# Measurement-only arguments: log every step, save nothing, no progress bar; use_cpu: see the module docstring.
def measurement_arguments(workdir: Path) -> dict:
    return {"output_dir": str(workdir), "use_cpu": not torch.cuda.is_available(), "logging_steps": 1,
            "report_to": "none", "save_strategy": "no", "disable_tqdm": True}


def _arguments(recipe: Recipe, workdir: Path, cls):
    matched = matched_arguments(recipe)
    if cls is SFTConfig:
        matched["max_length"] = recipe.data.max_length
    return cls(**measurement_arguments(workdir), **matched)


def load_model(recipe: Recipe, path: str, label_names: tuple[str, ...] | None):
    spec, cuda = recipe.model, torch.cuda.is_available()
    kwargs = {"dtype": DTYPES[spec.dtype], "quantization_config": bnb_config(spec.quantization, task=spec.task),
              "trust_remote_code": spec.trust_remote_code}
    if cuda:
        kwargs["device_map"] = {"": 0}
    elif spec.quantization.bits is not None:
        kwargs["device_map"] = {"": "cpu"}
    if spec.task == "sequence_classification":
        names = list(label_names or ())
        return AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
            **kwargs)
    return AutoModelForCausalLM.from_pretrained(path, **kwargs)


def quantization_of(model) -> dict:
    q = getattr(model.config, "quantization_config", None)
    if q is None:
        return {"bits": None}
    q = q if isinstance(q, dict) else q.to_dict()
    if q.get("load_in_8bit"):
        return {"bits": 8}
    return {"bits": 4, "quant_type": q["bnb_4bit_quant_type"], "double_quant": q["bnb_4bit_use_double_quant"],
            "compute_dtype": str(q["bnb_4bit_compute_dtype"]).removeprefix("torch.")}


def read_back(trainer, model) -> tuple[dict, dict]:
    """(matched, defaults) that every TRL route shares, read back from the live trainer, model and PEFT config:
    base, quantization, adapter shape, optimisation settings; and the defaults TRL chose."""
    args, peft = trainer.args, trainer.model.peft_config["default"]
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    matched = {
        "base": canonical_base(model.name_or_path),
        "dtype": str(model.dtype).removeprefix("torch."),
        "quantization": quantization_of(model),
        "adapter": {
            "method": "dora" if peft.use_dora else "rslora" if peft.use_rslora else "lora",
            "rank": peft.r, "alpha": float(peft.lora_alpha), "dropout": peft.lora_dropout,
            "targets": sorted(peft.target_modules), "modules_to_save": sorted(peft.modules_to_save or []),
        },
        "train": {
            "lr": args.learning_rate, "max_steps": args.max_steps, "batch_size": args.per_device_train_batch_size,
            "grad_accum": args.gradient_accumulation_steps, "seed": args.seed,
            "schedule": getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type),
            "warmup_steps": args.warmup_steps, "weight_decay": args.weight_decay,
            "max_grad_norm": args.max_grad_norm or None,
        },
        "trainable_params": sum(p.numel() for p in trainable),
    }
    defaults = {
        "gradient_checkpointing": bool(args.gradient_checkpointing),
        "mixed_precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "no",
        "adapter_dtype": str(trainable[0].dtype).removeprefix("torch."),
        "attn_implementation": model.config._attn_implementation,
        "optimizer": getattr(args.optim, "value", args.optim),
    }
    return matched, defaults


def _settings(trainer, model, eval_examples: int, fixed_layers: int, classify: bool, recipe: Recipe) -> dict:
    """What the TRL route actually used, read back from the live trainer, model and PEFT config."""
    args = trainer.args
    matched, defaults = read_back(trainer, model)
    matched["data"] = {
        "max_length": getattr(args, "max_length", recipe.data.max_length),
        "train_examples": len(trainer.train_dataset), "eval_examples": eval_examples,
        "examples_sha256": examples_digest(trainer.train_dataset),
    }
    matched["trainable_params"] = matched.pop("trainable_params")  # keep the key order of the results files
    return {
        "matched": matched,
        "defaults": {
            "trainer": "trl.SFTTrainer" if not classify else "transformers.Trainer (SFTTrainer is causal-LM only)",
            **defaults,
            "packing": bool(getattr(args, "packing", False)),
            "padding_free": bool(getattr(trainer, "padding_free", False)),
            "vocabulary_projection": "every position",
            "logging_steps": 1,
            "cpu_4bit_repack_disabled_layers": fixed_layers,
        },
    }


def run_trl(recipe: Recipe, workdir: Path) -> RouteRun:
    workdir.mkdir(parents=True, exist_ok=True)
    source = resolve_base(recipe.model.base)
    tokenizer, data = prepare_data(recipe)
    classify = recipe.model.task == "sequence_classification"
    keys = None if classify else ("input_ids", "labels")
    train_set = Dataset.from_list([r if keys is None else {k: r[k] for k in keys} for r in data.train])
    examples = data.eval[: recipe.eval.max_examples] if recipe.eval.max_examples else data.eval
    mean_tokens = sum(len(r["input_ids"]) for r in data.train) / max(len(data.train), 1)
    label_names = data.label_names
    del data  # a TRL user holds the dataset only, not also peftkit's Python lists: do not charge them to its memory
    gc.collect()

    model = load_model(recipe, source.path_or_id, label_names)
    clock = StepClock()
    if classify:
        trainer = CountedTrainer(
            model=get_peft_model(model, lora_config(recipe, model)),
            args=_arguments(recipe, workdir, TrainingArguments), train_dataset=train_set,
            data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer, callbacks=[clock])
    else:
        trainer = CountedSFTTrainer(
            model=model, args=_arguments(recipe, workdir, SFTConfig), train_dataset=train_set,
            processing_class=tokenizer, peft_config=lora_config(recipe, model), callbacks=[clock])
    trainer.clock = clock
    fixed_layers = keep_cpu_4bit_differentiable(trainer.model)
    trainer.train()

    device = next(trainer.model.parameters()).device
    loss = eval_loss(trainer.model, examples, make_collator(tokenizer, packing=False, task=recipe.model.task),
                     recipe.eval.batch_size or recipe.train.batch_size, device)
    peak, kind = peak_memory_mb()
    wall = process_age_s()

    settings = _settings(trainer, model, len(examples), fixed_layers, classify, recipe)
    steps = len(clock.elapsed)
    return RouteRun(
        route="trl", settings=settings, step_elapsed_s=clock.elapsed, step_tokens=clock.tokens,
        step_trained_tokens=clock.trained, step_loss=[clock.loss.get(s) for s in range(1, steps + 1)],
        eval_loss=loss, peak_memory_mb=peak, wall_s=wall, memory_kind=kind,
        trainable_params=settings["matched"]["trainable_params"], mean_example_tokens=mean_tokens,
    )
