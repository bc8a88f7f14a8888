"""The merge check: does the saved merged model predict what (base as trained + adapter) predicts?

On N held-out eval rows (prompt and reference answer, so the positions the adapter changed most are
included) we take the next-token distribution at every position from both models and report the mean
KL(p_trained || p_merged) and how often their top-1 tokens agree. The tolerances below are measured, not
guessed: see the comments, and the report names the one it used and why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import PeftkitError
from ..rundir import write_json

DEFAULT_PROMPTS = 16
# Reference log-probs are held in fp32 until the merged model is loaded: positions x vocab x 4 bytes
# (2048 x 49152 x 4 = 400 MB for SmolLM2). Rows are cut to fit.
MAX_POSITIONS = 2048


@dataclass(frozen=True)
class Tolerance:
    max_mean_kl: float
    min_top1: float  # over decisive positions (see DECISIVE_MARGIN)
    why: str


# A position counts for top-1 agreement only where the reference's favourite beats its runner-up by this many
# nats (10% more likely). At near-ties any rounding flips the winner: on the tiny random test models, whose
# distributions are almost flat, a correct bf16 merge agreed on only 94% of all positions.
DECISIVE_MARGIN = math.log(1.1)

# Measured mean KL (nats) of correct merges, and of wrong ones, on the tiny test runs (every adapter method) and on
# the SmolLM2-135M 4-bit quickstart (16 prompts, 1500 positions, 1421 decisive):
# - fp32 merge of an fp32 run: the same arithmetic up to summation order; tiny runs ~1e-9.
# - 16-bit on either side (a bf16 run's reference, or a bf16/fp16 save): each weight rounded once; tiny 5e-5..6e-4.
# - 4-bit run: the reference multiplies the dequantized NF4 weights in bf16 inside bitsandbytes and keeps every
#   activation in bf16. Quickstart: 2.4e-3 merged in fp32 (top-1 0.987), 3.2e-3 saved in bf16 (top-1 0.999);
#   tiny runs 3e-5..4e-4.
# - 8-bit (LLM.int8) also rounds activations to int8 in its forward, which no plain model does; tiny 4e-5..9e-4.
# Wrong merges of the quickstart: into the original (not dequantized) weights 0.55 (top-1 0.80); PEFT's merge into
# the 4-bit layers (dequantize, add, re-quantize) 1.5 (top-1 0.63); no adapter at all 1.9; lora_B x2 0.95; lora_B
# x1.1 0.015. Tolerances sit ~6x above the worst correct merge and ~25x below the smallest real merge bug seen.
# Top-1 is looser than the KL: the fp32 merge of the quickstart disagrees with its bf16 reference on 1.3% of
# decisive positions, all of them bf16 noise in the reference.
TOLERANCES = {
    "exact": Tolerance(1e-5, 0.999, "fp32 merge of an fp32 run: only summation order differs"),
    "half": Tolerance(
        2e-2, 0.95, "16-bit weights on one side (the run's base dtype or the saved dtype): each is rounded once"
    ),
    "4bit": Tolerance(
        2e-2, 0.95,
        "4-bit run: the reference multiplies the dequantized NF4 weights in the compute dtype inside "
        "bitsandbytes, the merged model holds the same dequantized values plus the adapter in the saved dtype",
    ),
    "8bit": Tolerance(
        4e-2, 0.93,
        "8-bit run: LLM.int8 also rounds the activations to int8 in its forward; the merged model does not",
    ),
}


def tolerance_for(bits: int | None, out_dtype: str, run_dtype: str = "float32") -> Tolerance:
    """`out_dtype`: bf16 | fp16 | fp32 of the merged weights; `run_dtype`: the run's model.dtype."""
    if bits == 8:
        return TOLERANCES["8bit"]
    if bits == 4:
        return TOLERANCES["4bit"]
    return TOLERANCES["exact"] if out_dtype == "fp32" and run_dtype == "float32" else TOLERANCES["half"]


@dataclass(frozen=True)
class MergeCheck:
    """What the check measured, and whether it is within tolerance. Written to `<out>/merge_check.json`."""

    passed: bool
    mean_kl: float
    max_kl: float
    top1_agreement: float  # over decisive positions: what the tolerance applies to
    top1_agreement_all: float  # over every position, near-ties included
    prompts: int
    positions: int
    decisive_positions: int
    max_mean_kl: float
    min_top1: float
    tolerance_why: str
    dtype: str
    quantization_bits: int | None

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (f"merge check {verdict}: mean KL {self.mean_kl:.2e} (tolerance {self.max_mean_kl:.0e}), top-1 "
                f"agreement {self.top1_agreement:.4f} (tolerance {self.min_top1}) over {self.decisive_positions} "
                f"decisive of {self.positions} positions in {self.prompts} held-out prompts")

    def write(self, path: Path) -> None:
        write_json(path, asdict(self))


class MergeCheckFailed(PeftkitError):
    """The merged model does not reproduce the trained model within tolerance; nothing was published."""

    def __init__(self, check: MergeCheck, where: str):
        self.check = check
        super().__init__(f"{where}: {check.summary()} ({check.tolerance_why}); the merged model was not written "
                         "(--no-check writes it anyway)")


def check_rows(eval_rows: Sequence[dict], n: int = DEFAULT_PROMPTS) -> list[list[int]]:
    """Token ids of the first `n` held-out rows (prompt + answer), cut to a total of MAX_POSITIONS."""
    rows, budget = [], MAX_POSITIONS
    for row in eval_rows[:n]:
        ids = list((row["chosen"] if "chosen" in row else row)["input_ids"])[:budget]  # a pair: its chosen answer
        if len(ids) >= 2:
            rows.append(ids)
            budget -= len(ids)
        if budget < 2:
            break
    if not rows:
        raise PeftkitError("merge check: the run has no held-out rows to compare on (--no-check skips it)")
    return rows


@torch.inference_mode()
def reference_logprobs(model: torch.nn.Module, rows: Sequence[list[int]]) -> list[torch.Tensor]:
    """fp32 next-token log-probs at every position of each row, one row at a time (no padding to differ)."""
    device = next(model.parameters()).device
    out = []
    for ids in rows:
        logits = model(input_ids=torch.tensor([ids], device=device)).logits[0]
        out.append(torch.log_softmax(logits.float(), dim=-1).cpu())
    return out


def compare(
    model: torch.nn.Module, rows: Sequence[list[int]], reference: Sequence[torch.Tensor], tolerance: Tolerance,
    *, dtype: str, bits: int | None,
) -> MergeCheck:
    """Run `model` on `rows` and measure it against `reference` (from `reference_logprobs`)."""
    merged = reference_logprobs(model, rows)
    kls, same, decisive = [], [], []
    for ref, got in zip(reference, merged, strict=True):
        vocab = min(ref.shape[-1], got.shape[-1])  # a padded embedding adds rows nothing ever predicts
        ref, got = ref[:, :vocab], got[:, :vocab]
        # KL >= 0; rounding in log_softmax can make an exact match read as -1e-9
        kls.append((ref.exp() * (ref - got)).sum(-1).clamp_min(0.0))
        top2 = ref.topk(2, dim=-1).values
        decisive.append(top2[:, 0] - top2[:, 1] >= DECISIVE_MARGIN)
        same.append(ref.argmax(-1) == got.argmax(-1))
    all_kl, all_same, all_decisive = torch.cat(kls), torch.cat(same), torch.cat(decisive)
    n_decisive = int(all_decisive.sum())
    top1 = float(all_same[all_decisive].float().mean()) if n_decisive else 1.0
    mean_kl = float(all_kl.mean())
    passed = math.isfinite(mean_kl) and mean_kl <= tolerance.max_mean_kl and top1 >= tolerance.min_top1
    return MergeCheck(
        passed=passed, mean_kl=mean_kl, max_kl=float(all_kl.max()), top1_agreement=top1,
        top1_agreement_all=float(all_same.float().mean()), prompts=len(rows), positions=int(all_kl.numel()),
        decisive_positions=n_decisive, max_mean_kl=tolerance.max_mean_kl, min_top1=tolerance.min_top1,
        tolerance_why=tolerance.why, dtype=dtype, quantization_bits=bits,
    )
