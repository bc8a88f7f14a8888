"""Which linear modules an adapter wraps: presets, explicit names and layer indices -> full module names."""

from __future__ import annotations

import re

import torch

from ..errors import Problem, RecipeError
from ..recipe.schema import AdapterSpec

# Leaf names of linear layers in each group, across Llama/Mistral/Qwen2 and BERT-style encoders.
PRESETS = {
    "attention": ("q_proj", "k_proj", "v_proj", "o_proj", "query", "key", "value", "attention.output.dense"),
    "mlp": ("gate_proj", "up_proj", "down_proj", "intermediate.dense", "output.dense"),
}
# Output heads are never adapted by a preset: they are trained in full via modules_to_save when needed.
HEADS = ("lm_head", "score", "classifier", "pre_classifier", "pooler.dense")
# Layers whose *input* IA3 scales (the MLP's last projection); IA3 scales the output of every other target.
FEEDFORWARD_OUT = ("down_proj", "fc2", "w2", "dense_4h_to_h")
# The same pattern PEFT uses for layers_to_transform: "...layers.3.", "...h.3.", "...layer.3." (BERT), "...blocks.3."
LAYER_INDEX = re.compile(r"\.(?:layers|layer|h|blocks)\.(\d+)\.")


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Every nn.Linear, bitsandbytes Linear4bit / Linear8bitLt included (they subclass it)."""
    return [name for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)]


def _layer_of(name: str) -> int | None:
    found = LAYER_INDEX.search("." + name + ".")
    return int(found.group(1)) if found else None


def _no_match(key: str, message: str, value) -> RecipeError:
    return RecipeError(None, [Problem(key, message, value, True)])


def resolve_targets(spec: AdapterSpec, model: torch.nn.Module) -> list[str]:
    """Full module names that exist in this model; an empty match is an error naming what exists."""
    names = [n for n in linear_module_names(model) if not any(n == h or n.endswith("." + h) for h in HEADS)]
    if spec.targets == "all-linear":
        wanted = names
    elif isinstance(spec.targets, str):
        group = PRESETS[spec.targets]
        wanted = [n for n in names if any(n.endswith("." + g) or n == g for g in group)]
        if spec.targets == "mlp":  # "output.dense" must not also catch BERT's "attention.output.dense"
            wanted = [n for n in wanted if "attention." not in n]
    else:
        wanted = [n for n in names if any(n == t or n.endswith("." + t) for t in spec.targets)]
    if not wanted:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise _no_match("adapter.targets", f"matches no linear module of this model (its linear modules: "
                        f"{', '.join(leaves)})", spec.targets)
    if spec.layers is not None:
        present = sorted({i for i in map(_layer_of, wanted) if i is not None})
        wanted = [n for n in wanted if _layer_of(n) in spec.layers]
        if not wanted:
            shown = f"{present[0]}..{present[-1]}" if present else "none found"
            raise _no_match("adapter.layers", f"selects none of the targeted modules (this model's layers: {shown})",
                            list(spec.layers))
    return wanted


def feedforward_targets(targets: list[str]) -> list[str]:
    """IA3's feedforward subset: the MLP output projections (BERT: `output.dense` outside attention)."""
    return [t for t in targets if t.rsplit(".", 1)[-1] in FEEDFORWARD_OUT
            or (t.endswith(".output.dense") and ".attention." not in t)]
