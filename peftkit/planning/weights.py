"""Bytes of a frozen base in memory, as bitsandbytes 0.50 stores it (bitsandbytes/functional.py, quantize_4bit and
int8_vectorwise_quant), and as transformers keeps what it does not quantize.

4-bit (NF4 / FP4): each weight's elements packed two per byte, plus one absmax per block of 64 elements: fp32
without double quantization; with it, uint8 (1 byte per block) plus, per 256 of those blocks, an fp32 second-level
absmax, and per weight a 256-entry fp32 code table, an fp32 offset and the 16-entry fp32 quantization map.
8-bit (LLM.int8): one int8 byte per element plus one fp32 scale per output row.
"""

from __future__ import annotations

from dataclasses import dataclass

from .inventory import Inventory

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
BLOCK_4BIT = 64  # elements per absmax block (bitsandbytes' default blocksize for weights)
BLOCK_NESTED = 256  # absmax blocks per second-level block with double quantization
NESTED_CONSTANTS = 256 * 4 + 4  # the double quantization's code table (256 fp32) and offset (fp32)
QUANT_MAP = 16 * 4  # the 16 NF4 / FP4 code values (fp32)


@dataclass(frozen=True)
class WeightBytes:
    quantized: int  # the weights bitsandbytes holds (0 when nothing is quantized)
    kept: int  # embeddings, head, norms, biases (and every weight when un-quantized) in the model dtype
    quantized_params: int
    kept_params: int
    label: str  # e.g. "NF4 + double quant", "int8", "bfloat16"


def four_bit_bytes(out_features: int, in_features: int, double_quant: bool) -> int:
    """One 4-bit weight's storage: packed elements + absmax (+ nested constants)."""
    n = out_features * in_features
    blocks = -(-n // BLOCK_4BIT)
    packed = -(-n // 2)
    if not double_quant:
        return packed + 4 * blocks + QUANT_MAP
    return packed + blocks + 4 * -(-blocks // BLOCK_NESTED) + NESTED_CONSTANTS + QUANT_MAP


def int8_bytes(out_features: int, in_features: int) -> int:
    """One LLM.int8 weight: int8 elements + an fp32 scale per output row."""
    return out_features * in_features + 4 * out_features


def weight_bytes(inv: Inventory, *, bits: int | None, quant_type: str = "nf4", double_quant: bool = True,
                 dtype: str = "bfloat16") -> WeightBytes:
    """`dtype`: the un-quantized weights' dtype (model.dtype, resolved)."""
    per = DTYPE_BYTES[dtype]
    if bits is None:
        return WeightBytes(0, inv.total * per, 0, inv.total, dtype)
    if bits == 8:
        q = sum(n * int8_bytes(o, i) for o, i, n in inv.linears)
        label = "int8 (LLM.int8)"
    else:
        q = sum(n * four_bit_bytes(o, i, double_quant) for o, i, n in inv.linears)
        label = quant_type.upper() + (" + double quant" if double_quant else "")
    return WeightBytes(q, inv.kept * per, inv.linear_params, inv.kept, label)
