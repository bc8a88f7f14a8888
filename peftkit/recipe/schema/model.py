"""`model:` — which base to load and how (precision, bitsandbytes quantization)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ._base import Section

DType = Literal["auto", "float32", "bfloat16", "float16"]


class QuantizationSpec(Section):
    bits: Literal[4, 8] | None = Field(
        None, description="4 or 8 to load the base through bitsandbytes; null (or 'none') keeps it un-quantized"
    )
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type (nf4 matches 16-bit LoRA in QLoRA)")
    double_quant: bool = Field(True, description="4-bit: also quantize the quantization constants (~0.4 bit/param saved)")
    compute_dtype: DType = Field(
        "auto", description="dtype the dequantized 4-bit weights are multiplied in; auto: bf16 on a GPU or CPU with native "
        "bf16, fp16 on an older GPU, fp32 on a CPU without AVX512-BF16/AMX (peftkit doctor shows the choice)"
    )
    skip_modules: tuple[str, ...] = Field(
        (), description="module names kept un-quantized (e.g. lm_head, score)"
    )

    @model_validator(mode="before")
    @classmethod
    def _none_string(cls, data):
        # `quantization: none` and `quantization.bits: none` both mean "no quantization".
        if data is None or (isinstance(data, str) and data.lower() in ("none", "null")):
            return {}
        if isinstance(data, dict) and isinstance(data.get("bits"), str) and data["bits"].lower() == "none":
            return {**data, "bits": None}
        return data

    @model_validator(mode="after")
    def _options_need_their_bits(self):
        # an option that the chosen bits ignore is refused, unless it sits at its default (resolved recipes list all)
        only_4bit = [k for k in ("quant_type", "double_quant", "compute_dtype")
                     if getattr(self, k) != type(self).model_fields[k].default]
        if self.bits != 4 and only_4bit:
            raise ValueError(f"{', '.join(only_4bit)} only apply to bits 4 (bits is {self.bits}): remove them or set bits 4")
        if self.bits is None and self.skip_modules:
            raise ValueError("skip_modules only applies with bits 4 or 8 (nothing is quantized)")
        return self


class ModelSpec(Section):
    base: str = Field(
        ..., description="zoo alias (peftkit models list), local HF folder, or hub id (needs network)"
    )
    task: Literal["causal_lm", "sequence_classification"] = Field(
        "causal_lm", description="causal_lm for generation; sequence_classification puts a head on an encoder"
    )
    dtype: DType = Field(
        "auto", description="dtype of the un-quantized weights; auto: as compute_dtype (bf16 only where the hardware "
        "computes it natively)"
    )
    quantization: QuantizationSpec = Field(default_factory=QuantizationSpec, description="bitsandbytes loading")
    trust_remote_code: bool = Field(False, description="run code shipped with a hub model; recorded in meta.json")
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto", description="attention backend; auto: sdpa, except eager for decoders trained on padded batches on CPU "
        "(peftkit.training.choices)"
    )
