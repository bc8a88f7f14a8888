"""The memory a recipe needs, line by line, from the base's config alone (no weights, no data).

Each line is held for the whole run (weights, adapter, optimizer state), or only while training steps
(gradients, activations, logits) or only while evaluating (the generation KV cache). The peak is
held + the larger of train and eval + the runtime overhead (CUDA context and allocator slack on a GPU; the
process's baseline on a CPU, torch and transformers imported). Lengths are worst cases: every row max_length
tokens, every position trained, as on the recipe's longest batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from ..adapters.estimate import estimate_adapter_params
from ..errors import Problem, RecipeError
from ..recipe import Recipe
from ..recipe.schema.adapter import PROMPT_LEARNING
from ..training.choices import choose_attention, choose_packing, sequences_per_example
from ..training.memory import BUDGET_SHARE, activation_bytes, model_for
from .inventory import Inventory
from .weights import DTYPE_BYTES, weight_bytes

Device = Literal["cuda", "cpu"]
GiB = 2**30
CUDA_CONTEXT = GiB // 2  # CUDA context + cuBLAS workspaces, outside torch's allocator
ALLOCATOR_SLACK = 0.10  # reserved beyond allocated: the caching allocator's fragmentation
# A CPU training process's resident set beyond what the lines count: ~406 MB with torch and transformers imported,
# ~1.0 GB once peft, bitsandbytes, datasets, the tokenizer and a first backward have loaded their code and pools.
# Measured with `peftkit plan --measure` on a 2-core EPYC: RSS peak minus the lines' sum was 0.92-1.04 GB on the
# quickstart (recompute off and on) and MiniLM recipes.
CPU_BASELINE = 1000 * 2**20
# Not counted on CPU: resident memory outside the tensors beyond that baseline (libraries' buffers, what glibc's heap
# keeps after frees): Code Alpaca with recompute held 0.6 GB of tensors at a 3.5 GB resident peak
# (benchmarks/results/plan.md). `plan --measure` compares the tensor lines with the tensors' measured peak.
ASSUMED_CARD = 24 * GiB  # the card `auto` recompute is decided for on CUDA when --memory is not given
GENERATION_METRICS = ("exact_match", "rouge_l", "numeric_match")
OPTIMIZER_STATE = {"adamw": 8, "adamw_8bit": 2, "paged_adamw_8bit": 2, "sgd": 4}  # bytes per trained parameter
CUDA_OPTIMIZERS = ("adamw_8bit", "paged_adamw_8bit")


@dataclass(frozen=True)
class Line:
    key: str
    label: str
    bytes: int
    phase: Literal["held", "train", "eval", "overhead"]
    note: str = ""


@dataclass(frozen=True)
class Settings:
    """What the estimate assumed, each `auto` resolved as the trainer would for the target device."""

    device: str
    dtype: str  # un-quantized weights
    activations: str  # activation dtype
    autocast: bool
    recompute: bool
    recompute_why: str
    attention: str
    rows_per_example: int
    tokens_per_step: int  # rows x micro-batch x max_length
    logits: str


@dataclass(frozen=True)
class Estimate:
    lines: tuple[Line, ...]
    peak_bytes: int  # what the device must hold
    allocated_bytes: int  # the peak without the overhead line: what torch.cuda.max_memory_allocated reports
    settings: Settings
    adapter_params: int
    base_params: int

    def phase(self, name: str) -> int:
        return sum(line.bytes for line in self.lines if line.phase == name)

    def to_dict(self) -> dict:
        return {"peak_bytes": self.peak_bytes, "allocated_bytes": self.allocated_bytes,
                "adapter_params": self.adapter_params, "base_params": self.base_params,
                "settings": asdict(self.settings), "lines": [asdict(line) for line in self.lines]}


def resolved_dtype(value: str, device: Device, cpu_dtype: str) -> str:
    return value if value != "auto" else ("bfloat16" if device == "cuda" else cpu_dtype)


def estimate(recipe: Recipe, inv: Inventory, *, device: Device = "cuda", device_bytes: int | None = None,
             cpu_dtype: str = "float32", trained_positions: int | None = None) -> Estimate:
    """The breakdown for `recipe` on `device`. `device_bytes`: the memory `auto` recompute is decided against
    (default: a 24 GiB card on CUDA, this machine's RAM on CPU); `cpu_dtype`: what `auto` means on this CPU;
    `trained_positions`: the positions of a micro-batch that carry loss, where known (a measured batch: its
    response tokens); else every position does, as the config alone cannot tell."""
    m, t, d, a = recipe.model, recipe.train, recipe.data, recipe.adapter
    if device == "cpu" and t.optimizer in CUDA_OPTIMIZERS:
        raise RecipeError(None, [Problem("train.optimizer", "bitsandbytes 8-bit/paged optimizers need a CUDA GPU; "
                                         "use adamw on CPU (or plan with --device cuda)", t.optimizer, True)])
    q, shape = m.quantization, inv.shape
    dtype = resolved_dtype(m.dtype, device, cpu_dtype)
    compute = resolved_dtype(q.compute_dtype, device, cpu_dtype) if q.bits == 4 else dtype
    autocast = device == "cuda" and t.mixed_precision != "no"
    act = 2 if autocast else DTYPE_BYTES[dtype]
    rows = sequences_per_example(t.objective)
    # batch_size auto: the largest micro-batch that fits is measured at train time; planned here at its ceiling
    batch = t.batch_size if isinstance(t.batch_size, int) else getattr(t, "effective_batch", None) or 1
    tokens = batch * rows * d.max_length
    causal = m.task == "causal_lm"
    selective = causal and t.selective_logits and a.method not in PROMPT_LEARNING and a.method != "adalora"
    chunk = t.logits_chunk if selective and not inv.logit_softcap else None
    cuda = device == "cuda"

    def acts_model(packed: bool):
        # the trainer's own choice of attention; eager (and attention dropout, BERT) keeps the probabilities
        eager = choose_attention(m.attn_implementation, m.task, packed, cuda=cuda) == "eager" or inv.attention_dropout
        return model_for(a, act_bytes=act, autocast=autocast, cuda=cuda, eager_seq=d.max_length if eager else None,
                         gated_mlp=inv.gated_mlp, rms_norm=inv.rms_norm, norms_per_layer=inv.norms_per_layer,
                         chunked_loss=bool(chunk), base_dropout=inv.attention_dropout)

    acts = acts_model(False)  # recompute is decided on padded rows, as the trainer does
    if t.gradient_checkpointing == "auto":
        budget = device_bytes or (ASSUMED_CARD if cuda else _ram())
        need = activation_bytes(shape, tokens, acts, recompute=False)
        recompute = need > BUDGET_SHARE * budget
        why = (f"auto: ~{need / GiB:.1f} GiB of activations {'>' if recompute else '<='} {BUDGET_SHARE:.0%} of "
               f"{budget / GiB:.0f} GiB")
    else:
        recompute, why = bool(t.gradient_checkpointing), "set in the recipe"
    acts = acts_model(choose_packing(recipe, recompute))

    w = weight_bytes(inv, bits=q.bits, quant_type=q.quant_type, double_quant=q.double_quant, dtype=dtype)
    adapter_params = estimate_adapter_params(a.model_copy(update={"modules_to_save": ()}), shape) + inv.saved
    lines = []
    if w.quantized:
        lines.append(Line("weights_quantized", f"base weights, {w.label}", w.quantized, "held",
                          f"{w.quantized_params / 1e9:.2f}B params in quantized linear layers"))
    kept_what = "embeddings, head, norms, biases" if q.bits else "every weight"
    lines.append(Line("weights_kept", f"base weights in {dtype} ({kept_what})", w.kept, "held",
                      f"{w.kept_params / 1e9:.3f}B params" + (", embeddings tied to the head" if inv.tied else "")))
    lines.append(Line("adapter", f"adapter weights ({a.method}, fp32)", 4 * adapter_params, "held",
                      f"{adapter_params / 1e6:.1f}M trained params"))
    lines.append(Line("optimizer", f"optimizer state ({t.optimizer})", OPTIMIZER_STATE[t.optimizer] * adapter_params,
                      "held", "paged: can spill to host memory" if t.optimizer.startswith("paged") else ""))
    lines.append(Line("gradients", "adapter gradients (fp32)", 4 * adapter_params, "train"))
    lines.append(Line("activations", f"activations ({'recompute on' if recompute else 'recompute off'})",
                      activation_bytes(shape, tokens, acts, recompute=recompute, offload=t.checkpoint_offload),
                      "train", f"{tokens:,} tokens per micro-batch"
                      + (", eager attention" if acts.attention_seq else "")))
    # selective logits project only the trained positions; without it every position is projected
    positions = trained_positions if selective and trained_positions is not None else tokens
    logits, logits_note = _logits(inv, positions, act, causal=causal, selective=selective, chunk=chunk)
    lines.append(Line("logits", "logits for the loss", logits, "train", logits_note))
    if q.bits:
        lines.append(Line("dequant", f"{q.bits}-bit dequantized weight (largest layer, {compute})",
                          inv.largest_linear * DTYPE_BYTES[compute], "train", "one at a time, forward and backward"))
    lines.append(_eval_line(recipe, inv, act))
    held, train_b, eval_b = (sum(x.bytes for x in lines if x.phase == p) for p in ("held", "train", "eval"))
    allocated = held + max(train_b, eval_b)
    if device == "cuda":
        overhead = Line("overhead", "CUDA context + allocator slack", CUDA_CONTEXT + int(ALLOCATOR_SLACK * allocated),
                        "overhead", f"{CUDA_CONTEXT / GiB:.1f} GiB context, {ALLOCATOR_SLACK:.0%} fragmentation")
    else:
        overhead = Line("overhead", "process baseline (torch, transformers loaded)", CPU_BASELINE, "overhead")
    lines.append(overhead)
    settings = Settings(device, dtype, {2: "16-bit", 4: "float32"}[act], autocast, recompute, why,
                        "eager" if acts.attention_seq else "sdpa", rows, tokens, logits_note)
    return Estimate(tuple(lines), allocated + overhead.bytes, allocated, settings, adapter_params, inv.total)


def _logits(inv: Inventory, tokens: int, act: int, *, causal: bool, selective: bool, chunk: int | None):
    if not causal:
        return 0, "classification head: a few values per row"
    vocab = inv.shape.vocab
    upcast = 4 if act != 4 else 0  # the fp32 copy the cross-entropy reads
    if chunk:
        n = min(chunk, tokens)
        return n * vocab * (act + upcast + 4), f"chunked: {n} positions x {vocab:,} vocabulary at a time"
    why = "soft-capped logits cannot be chunked" if inv.logit_softcap else (
        "train.logits_chunk null" if selective else "train.selective_logits false")
    return tokens * vocab * (act + upcast + 4), f"all {tokens:,} positions x {vocab:,} vocabulary ({why})"


def _eval_line(recipe: Recipe, inv: Inventory, act: int) -> Line:
    e, shape = recipe.eval, inv.shape
    batch = e.batch_size or recipe.train.batch_size
    batch = batch if isinstance(batch, int) else getattr(recipe.train, "effective_batch", None) or 1
    if recipe.model.task == "causal_lm" and set(e.metrics) & set(GENERATION_METRICS):
        length = recipe.data.max_length + e.max_new_tokens
        kv = batch * length * shape.layers * 2 * shape.kv_heads * shape.head_dim * act
        return Line("eval", "eval: generation KV cache", kv, "eval",
                    f"{batch} x {length} tokens x {shape.layers} layers x 2 x {shape.kv_heads} kv heads x "
                    f"{shape.head_dim}")
    tokens = batch * recipe.data.max_length  # a no-grad forward: one block's intermediates at a time
    width = (3 if inv.gated_mlp else 1) * shape.intermediate + 4 * shape.hidden
    return Line("eval", "eval: forward without gradients", tokens * width * act, "eval", f"{batch} x "
                f"{recipe.data.max_length} tokens, one block at a time")


def _ram() -> int:
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def with_overrides(recipe: Recipe, overrides: list[str]) -> Recipe:
    """The recipe with KEY=VALUE overrides applied, as `peftkit plan RECIPE KEY=VALUE` would read it."""
    from ..recipe import recipe_from_dict

    return recipe_from_dict(recipe.model_dump(mode="json"), overrides=overrides, source=f"recipe {recipe.name}")

