"""The model of training memory that both `peftkit plan` and the trainer read: activations of one micro-batch,
what autograd keeps between the forward and the backward, per token.

One model of memory for the planner (`peftkit plan`) and for the trainer's `train.gradient_checkpointing: auto`
(peftkit.training.choices), counted from what PyTorch saves for the backward in a decoder block with frozen base
weights and adapters on top (bitsandbytes' 4/8-bit matmuls and a frozen nn.Linear keep nothing of their input):
- each norm: RMSNorm keeps an fp32 copy of its input (LayerNorm: its input);
- attention: q, k, v (k and v repeated to every head) and the output of fused attention (SDPA / flash); eager
  attention (and SDPA with attention dropout) also keeps the heads x sequence probabilities, fp32 from the softmax;
  a base with its own dropout (BERT, p=0.1) keeps, besides, the probabilities' dropout mask and their dropped copy
  (three heads x sequence tensors in all) and the masks of its two hidden-state dropouts;
- MLP: SwiGLU / GeGLU keeps the gate's input, the activation and the up projection (3 x intermediate); a GELU MLP
  its input (1 x intermediate);
- each adapted layer's input, cast to the adapter's dtype (PEFT casts x to the fp32 adapter; under autocast the
  matmul keeps a 16-bit copy), one copy per layer when cast or behind dropout, else shared by the layers reading
  the same tensor; dropout's mask (1 byte per element in CUDA's fused kernel; on CPU the scaled noise, as wide as
  the input); and the rank-wide output of A;
- a backward workspace of two intermediate-wide gradients, for the one block whose backward is running.
With recompute (gradient checkpointing) each block keeps only its input, and one block's activations exist again
while its backward runs; with checkpoint_offload even the inputs move to host memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..adapters.estimate import ALIASES, BaseShape

# (input width, adapted leaves reading that same input) of one Llama-style block; BERT names map via ALIASES
INPUT_GROUPS = (("hidden", ("q_proj", "k_proj", "v_proj")), ("attention", ("o_proj",)),
                ("hidden", ("gate_proj", "up_proj")), ("intermediate", ("down_proj",)))
ALL_LEAVES = frozenset(leaf for _, leaves in INPUT_GROUPS for leaf in leaves)
TARGET_LEAVES = {"all-linear": ALL_LEAVES, "attention": frozenset(("q_proj", "k_proj", "v_proj", "o_proj")),
                 "mlp": frozenset(("gate_proj", "up_proj", "down_proj"))}


@dataclass(frozen=True)
class ActivationModel:
    """What decides the bytes per token: the compute dtype, how adapters see their input, attention's kind."""

    act_bytes: int = 4  # one activation element (the compute dtype)
    adapter_in_bytes: int = 4  # an adapted layer's saved input: 4 (fp32 adapter, no autocast) or the autocast dtype
    rank: int = 16
    dropout: bool = False  # adapter dropout > 0
    dropout_mask_bytes: int = 4  # per element: 1 with CUDA's fused dropout, the input's width on CPU
    adapted: frozenset[str] = ALL_LEAVES  # leaves of INPUT_GROUPS carrying an adapter
    attention_seq: int | None = None  # eager attention: the sequence length whose probabilities are kept
    gated_mlp: bool = True
    rms_norm: bool = True
    norms_per_layer: int = 2
    hidden_states_kept: bool = False  # the chunked loss asks for every layer's hidden states (alive at the forward's end)
    dropout_in_base: bool = False  # the base's own dropout while training (BERT: on probabilities and hidden states)


def adapted_leaves(targets) -> frozenset[str]:
    """adapter.targets as the leaves above; a list of module names maps through ALIASES, unknown names count as
    every layer (an upper bound, as peftkit.adapters.estimate does)."""
    if isinstance(targets, str):
        return TARGET_LEAVES.get(targets, ALL_LEAVES)
    leaves = {ALIASES.get(t.rsplit(".", 1)[-1], t.rsplit(".", 1)[-1]) for t in targets}
    leaves |= {"gate_proj", "up_proj"} if "gate_up_proj" in leaves else set()
    leaves |= {"q_proj", "k_proj", "v_proj"} if "qkv_proj" in leaves else set()
    return frozenset(leaves & ALL_LEAVES) if leaves <= ALL_LEAVES | {"gate_up_proj", "qkv_proj"} else ALL_LEAVES


def layer_bytes(shape: BaseShape, m: ActivationModel) -> int:
    """Bytes one block keeps per token for its backward (its backward's transient workspace: workspace_bytes)."""
    h, i, a, lb = shape.hidden, shape.intermediate, m.act_bytes, m.adapter_in_bytes
    heads_width = shape.heads * shape.head_dim
    total = m.norms_per_layer * h * (4 if m.rms_norm else a)
    total += 4 * heads_width * a  # q, k, v (repeated to every head), attention output
    if m.attention_seq:
        total += shape.heads * m.attention_seq * (4 + (a if a != 4 else 0))  # fp32 softmax + its cast
    if m.dropout_in_base:  # the probabilities' dropout mask and the dropped copy the matmul with v keeps; the two
        # hidden dropouts' masks (after attention's and the MLP's output projections)
        total += shape.heads * (m.attention_seq or 0) * (m.dropout_mask_bytes + a) + 2 * h * m.dropout_mask_bytes
    total += (3 if m.gated_mlp else 1) * i * a
    widths = {"hidden": h, "attention": heads_width, "intermediate": i}
    for width, leaves in INPUT_GROUPS:
        n = len(m.adapted & set(leaves))
        if not n:
            continue
        copies = n if (lb != a or m.dropout) else 1
        total += copies * widths[width] * (lb + (m.dropout_mask_bytes if m.dropout else 0)) + n * m.rank * lb
    return total


def workspace_bytes(shape: BaseShape, m: ActivationModel) -> int:
    """Per token, the transient gradients of the one block whose backward is running (not one per block)."""
    return 2 * shape.intermediate * m.act_bytes


def activation_bytes(shape: BaseShape, tokens: int, m: ActivationModel, *, recompute: bool,
                     offload: bool = False) -> int:
    """Activations of a micro-batch of `tokens` tokens (every sequence of it: a pair's two answers count twice)."""
    outside = shape.hidden * (m.act_bytes + 4)  # embedding output, final norm
    if recompute:
        kept_inputs = 0 if offload else shape.layers * shape.hidden * m.act_bytes
        return tokens * (kept_inputs + layer_bytes(shape, m) + workspace_bytes(shape, m) + outside)
    hidden_states = shape.layers * shape.hidden * m.act_bytes if m.hidden_states_kept and m.act_bytes != 4 else 0
    return tokens * (shape.layers * layer_bytes(shape, m) + workspace_bytes(shape, m) + hidden_states + outside)


# train.gradient_checkpointing: auto turns recompute on when a micro-batch's activations (above) would take more
# than this share of the device's memory (peftkit.training.choices; `peftkit plan` applies the same rule).
BUDGET_SHARE = 0.25


def architecture(values: dict) -> tuple[bool, bool, bool]:
    """(gated MLP, RMSNorm, attention dropout) from a config.json's numbers: a config with rms_norm_eps is a
    Llama-family decoder (RMSNorm, SwiGLU/GeGLU); without it, LayerNorm and a GELU MLP (BERT, GPT-2).
    peftkit.planning.inventory reads the same from the built model."""
    if isinstance(values.get("text_config"), dict):
        values = {**values, **values["text_config"]}
    rms = "rms_norm_eps" in values
    dropout = any(isinstance(values.get(k), (int, float)) and values[k] > 0
                  for k in ("attention_probs_dropout_prob", "attention_dropout"))
    return rms, rms, dropout


def model_for(adapter, *, act_bytes: int, autocast: bool, cuda: bool, eager_seq: int | None = None,
              gated_mlp: bool = True, rms_norm: bool = True, norms_per_layer: int = 2,
              chunked_loss: bool = False, base_dropout: bool = False) -> ActivationModel:
    """The activation model of a recipe's adapter section (peftkit.recipe.schema.AdapterSpec) on a base whose
    activations are `act_bytes` wide; `autocast`: mixed precision on (the adapters' inputs kept 16-bit)."""
    weight_method = adapter.method not in ("prompt_tuning", "prefix_tuning")
    return ActivationModel(
        act_bytes=act_bytes, adapter_in_bytes=act_bytes if autocast else 4, rank=adapter.rank,
        dropout=adapter.dropout > 0 and adapter.method in ("lora", "dora", "rslora", "adalora", "vera"),
        dropout_mask_bytes=1 if cuda else (act_bytes if autocast else 4),
        adapted=adapted_leaves(adapter.targets) if weight_method else frozenset(), attention_seq=eager_seq,
        gated_mlp=gated_mlp, rms_norm=rms_norm, norms_per_layer=norms_per_layer, hidden_states_kept=chunked_loss,
        dropout_in_base=base_dropout,
    )
