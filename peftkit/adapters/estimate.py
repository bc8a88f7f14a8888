"""How many parameters an adapter will save, from the base's config.json alone: preflight sizes the disk with it
before any weights load. Each method's count is its PEFT 0.21 tensor shapes (tests/adapters/test_estimate.py
attaches every method to a tiny model and checks the count from above); what config.json cannot tell is
over-counted, never under-counted."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from peft.tuners.lokr.layer import factorization

from ..recipe.schema import AdapterSpec
from .methods import adalora_init_rank
from .targets import FEEDFORWARD_OUT, PRESETS


@dataclass(frozen=True)
class BaseShape:
    """The numbers of a decoder block that adapter sizes follow. `experts`: MLP copies per block (1 without MoE)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    experts: int = 1

    def linears(self) -> dict[str, tuple[int, int]]:
        """Leaf name -> (in, out) of each linear layer of one block, Llama-style (BERT's map onto them)."""
        q, kv, h, i = self.heads * self.head_dim, self.kv_heads * self.head_dim, self.hidden, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


# Other names of the same layers: BERT-style encoders (peftkit.adapters.targets.PRESETS lists both).
ALIASES = {"query": "q_proj", "key": "k_proj", "value": "v_proj", "attention.output.dense": "o_proj",
           "intermediate.dense": "up_proj", "output.dense": "down_proj"}
MLP = ("gate_proj", "up_proj", "down_proj")


def base_shape(config: dict) -> BaseShape | None:
    """The shape from a config.json (a multimodal wrapper's text_config included); None without hidden size and
    layer count."""
    if isinstance(config.get("text_config"), dict):  # multimodal wrappers keep the language model inside
        config = {**config, **config["text_config"]}

    def first(*keys: str) -> int | None:
        return next((config[k] for k in keys if isinstance(config.get(k), int) and config[k] > 0), None)

    hidden = first("hidden_size", "n_embd", "d_model", "dim")
    layers = first("num_hidden_layers", "n_layer", "num_layers", "n_layers")
    if hidden is None or layers is None:
        return None
    heads = first("num_attention_heads", "n_head", "num_heads") or 1
    experts = first("num_local_experts", "num_experts", "n_routed_experts")
    shared = first("n_shared_experts", "num_shared_experts") or 0
    return BaseShape(
        hidden=hidden, layers=layers, heads=heads,
        intermediate=first("intermediate_size", "n_inner", "ffn_dim", "hidden_dim") or 4 * hidden,
        kv_heads=first("num_key_value_heads", "n_head_kv") or heads,
        head_dim=first("head_dim") or max(hidden // heads, 1),
        vocab=first("vocab_size") or 32_000,
        experts=experts + shared if experts else 1,  # every expert's MLP may be a target
    )


def _lokr(r: int, n_in: int, n_out: int) -> int:
    (in_m, in_n), (out_l, out_k) = factorization(n_in), factorization(n_out)
    w2 = out_k * in_n if r >= max(out_k, in_n) / 2 else r * (out_k + in_n)  # PEFT's rule for a low-rank w2
    return out_l * in_m + w2


# Parameters one wrapped linear layer (in, out, leaf name) adds, per method.
PER_LAYER: dict[str, Callable[[AdapterSpec, int, int, str], int]] = {
    "lora": lambda s, n_in, n_out, _: s.rank * (n_in + n_out),
    "rslora": lambda s, n_in, n_out, _: s.rank * (n_in + n_out),
    "dora": lambda s, n_in, n_out, _: s.rank * (n_in + n_out) + n_out,  # + the magnitude vector
    "adalora": lambda s, n_in, n_out, _: adalora_init_rank(s) * (n_in + n_out + 1),  # A, B and E at the start rank
    "loha": lambda s, n_in, n_out, _: 2 * s.rank * (n_in + n_out),
    "lokr": lambda s, n_in, n_out, _: _lokr(s.rank, n_in, n_out),
    "vera": lambda s, n_in, n_out, _: n_out + s.rank,  # lambda_b, lambda_d; the shared A and B: see estimate
    "ia3": lambda s, n_in, n_out, leaf: n_in if leaf in FEEDFORWARD_OUT else n_out,
    "oft": lambda s, n_in, n_out, _: n_in * (s.block_size - 1) // 2,  # in/b skew-symmetric b x b blocks
    "boft": lambda s, n_in, n_out, _: s.butterfly_factor * n_in * s.block_size + n_out,
}


def estimate_adapter_params(spec: AdapterSpec, shape: BaseShape) -> int:
    """Parameters the adapter of `spec` trains on a base of this shape, plus modules_to_save (each counted as a
    vocab x hidden matrix) and VeRA's frozen shared projections (saved with it): an upper bound for disk space."""
    if spec.method == "prompt_tuning":
        params = spec.num_virtual_tokens * shape.hidden
    elif spec.method == "prefix_tuning":  # a key and a value per layer; PEFT sizes them by the KV heads
        params = spec.num_virtual_tokens * shape.layers * 2 * max(shape.hidden, shape.kv_heads * shape.head_dim)
    else:
        per_layer = PER_LAYER[spec.method]
        wrapped = _wrapped(spec, shape)
        layers = min(len(set(spec.layers)), shape.layers) if spec.layers is not None else shape.layers
        params = layers * sum(per_layer(spec, n_in, n_out, leaf) for leaf, (n_in, n_out) in wrapped)
        if spec.method == "vera":
            params += spec.rank * (max(i for _, (i, _) in wrapped) + max(o for _, (_, o) in wrapped))
    return params + len(spec.modules_to_save) * shape.hidden * shape.vocab


def _wrapped(spec: AdapterSpec, shape: BaseShape) -> list[tuple[str, tuple[int, int]]]:
    """(leaf, (in, out)) of the layers one block wraps; an unknown module name counts as the widest layer, and a
    list of names never as more than every layer of the block."""
    linears = shape.linears()
    every = [(leaf, io) for leaf, io in linears.items() for _ in range(shape.experts if leaf in MLP else 1)]
    if spec.targets == "all-linear":
        return every
    if isinstance(spec.targets, str):
        leaves = {ALIASES.get(n, n) for n in PRESETS[spec.targets]}
        return [(leaf, io) for leaf, io in every if leaf in leaves]
    known = {_leaf(t) for t in spec.targets} & set(linears)
    named = [(leaf, io) for leaf, io in every if leaf in known]
    widest = max(max(io) for io in linears.values())
    named += [(t, (widest, widest)) for t in spec.targets if _leaf(t) not in linears]
    return named if _total(spec, named) <= _total(spec, every) else every


def _leaf(name: str) -> str:
    for alias, leaf in ALIASES.items():
        if name == alias or name.endswith("." + alias):
            return leaf
    return name.rsplit(".", 1)[-1]


def _total(spec: AdapterSpec, wrapped: list[tuple[str, tuple[int, int]]]) -> int:
    return sum(PER_LAYER[spec.method](spec, n_in, n_out, leaf) for leaf, (n_in, n_out) in wrapped)
