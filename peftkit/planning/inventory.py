"""What a base model's parameters are, from its config alone: which weights bitsandbytes would quantize, which stay
in the model dtype (embeddings, head, norms, biases), and the shape numbers the activation model reads.

The model is built on PyTorch's meta device (no memory, ~0.1-2 s), so fused layers (Phi-3's qkv_proj and
gate_up_proj), Gemma-2's head_dim and tied embeddings count as transformers builds them. An architecture
transformers cannot build from the config falls back to a Llama-shaped count from the config's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..adapters.estimate import BaseShape, base_shape
from ..errors import PeftkitError
from ..training.memory import architecture

# Linear layers transformers' bitsandbytes integration leaves un-quantized besides the output embeddings
# (peftkit.modeling.load: classification heads stay trainable).
HEAD_MODULES = ("score", "classifier", "pre_classifier")


@dataclass(frozen=True)
class Inventory:
    """Parameter counts by how they are stored. `linears`: (out, in, how many) of each quantizable weight shape."""

    shape: BaseShape
    linears: tuple[tuple[int, int, int], ...]
    kept: int  # parameters outside quantizable weights: embeddings, untied head, norms, biases, heads
    embeddings: int  # of `kept`: input (and tied output) embeddings
    head: int  # of `kept`: an untied output projection (lm_head) or a classification head
    norms_per_layer: int
    gated_mlp: bool  # SwiGLU / GeGLU: gate and up projections (Llama, Qwen, Mistral, Gemma, Phi-3)
    rms_norm: bool
    tied: bool
    saved: int  # parameters of adapter.modules_to_save (trained in full)
    logit_softcap: bool  # logits are soft-capped after the head (Gemma-2): the loss cannot chunk them
    attention_dropout: bool  # dropout on attention probabilities while training (BERT): they are kept
    built: bool  # counted from a meta-device model (False: from the config's numbers)

    @property
    def linear_params(self) -> int:
        return sum(o * i * n for o, i, n in self.linears)

    @property
    def total(self) -> int:
        return self.linear_params + self.kept

    @property
    def largest_linear(self) -> int:
        return max((o * i for o, i, _ in self.linears), default=0)


def text_values(values: dict) -> dict:
    """A multimodal wrapper's language-model config merged over the top level (as base_shape reads it)."""
    return {**values, **values["text_config"]} if isinstance(values.get("text_config"), dict) else values


def build_inventory(values: dict, *, task: str = "causal_lm", skip_modules: tuple[str, ...] = (),
                    modules_to_save: tuple[str, ...] = (), num_labels: int = 2) -> Inventory:
    """The inventory of the model a recipe would load: `skip_modules` (model.quantization.skip_modules) and the
    classification heads of sequence_classification stay un-quantized."""
    shape = base_shape(values)
    if shape is None:
        raise PeftkitError("config.json gives no hidden size / layer count to plan from (hidden_size, "
                           "num_hidden_layers)")
    skip = tuple(skip_modules) + (HEAD_MODULES if task == "sequence_classification" else ())
    model = _meta_model(values, task, num_labels)
    if model is None:
        return _from_numbers(values, shape, skip)
    return _from_model(model, values, shape, skip, modules_to_save)


def _meta_model(values: dict, task: str, num_labels: int):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    try:
        config = AutoConfig.for_model(**values)
        if task == "sequence_classification":
            config.num_labels = num_labels
        with torch.device("meta"):
            auto = AutoModelForSequenceClassification if task == "sequence_classification" else AutoModelForCausalLM
            return auto.from_config(config)
    except (ValueError, KeyError, TypeError, AttributeError, ImportError, RuntimeError):
        return None  # an architecture this transformers cannot build: count from the config's numbers


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    parts = name.split(".")
    return any(p in parts or name.endswith("." + p) or name == p for p in patterns)


def _from_model(model, values: dict, shape: BaseShape, skip: tuple[str, ...], saved_names) -> Inventory:
    import torch

    head_module = model.get_output_embeddings()
    tied = head_module is not None and head_module.weight is model.get_input_embeddings().weight
    counted: set[int] = set()
    linears: dict[tuple[int, int], int] = {}
    kept = embeddings = head = norms = 0
    gated = False
    first_layer = None
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if id(p) not in counted]
        counted.update(id(p) for p in own)
        if first_layer is None and name.endswith(".0") and "layer" in name.rsplit(".", 2)[-2]:
            first_layer = name + "."
        gated |= "gate" in name.rsplit(".", 1)[-1]
        if isinstance(module, torch.nn.Embedding):
            embeddings += sum(p.numel() for p in own)
        elif isinstance(module, torch.nn.Linear) and module is not head_module and not _matches(name, skip):
            out_f, in_f = module.weight.shape
            linears[(out_f, in_f)] = linears.get((out_f, in_f), 0) + 1
            kept += sum(p.numel() for p in own if p is not module.weight)  # the bias stays in the model dtype
            continue
        elif module is head_module or _matches(name, HEAD_MODULES):
            head += sum(p.numel() for p in own)
        elif "norm" in type(module).__name__.lower() and first_layer and name.startswith(first_layer):
            norms += 1
        kept += sum(p.numel() for p in own)
    saved = sum(sum(p.numel() for p in m.parameters()) for n, m in model.named_modules()
                if n in saved_names or n.rsplit(".", 1)[-1] in saved_names)  # as PEFT matches modules_to_save
    v = text_values(values)
    return Inventory(
        shape=shape, linears=tuple((o, i, n) for (o, i), n in linears.items()), kept=kept, embeddings=embeddings,
        head=head, norms_per_layer=norms or 2, gated_mlp=gated, rms_norm=_rms(model), tied=tied, saved=saved,
        logit_softcap=bool(v.get("final_logit_softcapping")), attention_dropout=architecture(v)[2], built=True,
    )


def _rms(model) -> bool:
    return any("rmsnorm" in type(m).__name__.lower() for m in model.modules())


def _from_numbers(values: dict, shape: BaseShape, skip: tuple[str, ...]) -> Inventory:
    v = text_values(values)
    per_layer = {}
    for leaf, (n_in, n_out) in shape.linears().items():
        if leaf not in skip:
            copies = shape.experts if leaf in ("gate_proj", "up_proj", "down_proj") else 1
            per_layer[(n_out, n_in)] = per_layer.get((n_out, n_in), 0) + copies * shape.layers
    tied = bool(v.get("tie_word_embeddings", True))
    embeddings = shape.vocab * shape.hidden
    head = 0 if tied else shape.vocab * shape.hidden
    norms = (2 * shape.layers + 1) * shape.hidden
    return Inventory(
        shape=shape, linears=tuple((o, i, n) for (o, i), n in per_layer.items()), kept=embeddings + head + norms,
        embeddings=embeddings, head=head, norms_per_layer=2, gated_mlp=True, rms_norm=True, tied=tied, saved=0,
        logit_softcap=bool(v.get("final_logit_softcapping")), attention_dropout=architecture(v)[2], built=False,
    )
