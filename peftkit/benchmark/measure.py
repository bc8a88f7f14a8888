"""What the bench measures, defined once for both routes: steady-state token rates, the machine's bf16 matmul
rate, and model FLOPs per token (peak memory: peftkit.hardware.peak_memory_mb, the one reading for every caller)."""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass

import torch

# Attention counted as in PaLM (Chowdhery et al. 2022, app. B): 2 matmuls (QK^T, AV) of 2*T*d FLOPs per token and
# layer forward, twice that backward (gradients w.r.t. activations are needed even with frozen weights), no causal
# halving. Frozen linear weights cost 2N forward + 2N backward (input gradients only), trainable ones 6N.
FLOPS_FORMULA = "4*N_frozen + 6*N_trainable + 12*L*T*d_attn  (per token; T = mean example length in tokens)"


def process_age_s() -> float:
    """Seconds since this process started (imports included), by the kernel's clock."""
    import psutil

    return time.time() - psutil.Process().create_time()


@dataclass(frozen=True)
class Rates:
    tokens_per_s: float
    trained_tokens_per_s: float
    timed_steps: int      # steps the rates cover
    warmup_excluded: int  # leading steps left out


def steady_rates(elapsed_s: list[float], tokens: list[int], trained: list[int], warmup: int) -> Rates:
    """Token rates over steps warmup+1..end. `elapsed_s[i]`: training seconds at the end of step i+1 (cumulative);
    `tokens[i]` / `trained[i]`: non-pad / loss-carrying tokens of that step. Runs no longer than the warm-up are
    timed from the start (warmup_excluded says 0)."""
    if not elapsed_s or not (len(elapsed_s) == len(tokens) == len(trained)):
        raise ValueError("steady_rates: per-step lists must be non-empty and of equal length")
    w = warmup if 0 < warmup < len(elapsed_s) else 0
    start = elapsed_s[w - 1] if w else 0.0
    seconds = max(elapsed_s[-1] - start, 1e-9)
    return Rates(sum(tokens[w:]) / seconds, sum(trained[w:]) / seconds, len(elapsed_s) - w, w)


def tail_mean(values: list[float], n: int = 5) -> float | None:
    """Mean of the last n values: a final loss less at the mercy of one batch."""
    tail = [v for v in values[-n:] if v is not None]
    return statistics.fmean(tail) if tail else None


@dataclass(frozen=True)
class MatmulProbe:
    gflops: float
    size: int
    dtype: str
    device: str
    threads: int
    seconds: float


def matmul_rate(*, seconds: float = 2.0, size: int | None = None, dtype: str = "bfloat16") -> MatmulProbe:
    """Sustained matmul rate of this machine in `dtype` (the one the runs compute in: a CPU without AVX512-BF16
    runs bf16 about half as fast as fp32), measured now, so it sees the same load as the runs."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    size = size or (8192 if device == "cuda" else 2048)  # big enough to be compute-bound on each
    a = torch.randn(size, size, dtype=getattr(torch, dtype), device=device)
    b = torch.randn(size, size, dtype=getattr(torch, dtype), device=device)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):  # warm-up: kernel selection, thread pool start
        a @ b
    sync()
    n, t0 = 0, time.perf_counter()
    while True:
        a @ b
        n += 1
        if n % 4 == 0:
            sync()
            if time.perf_counter() - t0 >= seconds:
                break
    took = time.perf_counter() - t0
    return MatmulProbe(2 * size**3 * n / took / 1e9, size, dtype, device, torch.get_num_threads(), took)


@dataclass(frozen=True)
class ModelShape:
    frozen_linear_params: int  # weights of every matmul layer the adapter leaves frozen (lm_head included)
    layers: int
    attn_width: int            # heads x head_dim


def model_shape(path: str, *, task: str, num_labels: int | None, full_modules: tuple[str, ...],
                trust_remote_code: bool = False) -> ModelShape:
    """Counted on an empty (meta-device) copy of the base: no weights are read. Modules trained in full
    (`full_modules`, e.g. a classifier head) are left out of the frozen count: they are in N_trainable."""
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
    )

    cfg = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    auto = AutoModelForCausalLM
    if task == "sequence_classification":
        cfg.num_labels = num_labels or 2
        auto = AutoModelForSequenceClassification
    with torch.device("meta"):
        model = auto.from_config(cfg, trust_remote_code=trust_remote_code)
    frozen = sum(
        m.in_features * m.out_features for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and not any(name == f or name.endswith("." + f) for f in full_modules)
    )
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return ModelShape(frozen, cfg.num_hidden_layers, heads * head_dim)


def flops_per_token(shape: ModelShape, trainable_params: int, mean_tokens: float) -> float:
    return (4 * shape.frozen_linear_params + 6 * trainable_params
            + 12 * shape.layers * mean_tokens * shape.attn_width)


def machine_info() -> dict:
    from ..hardware import detect

    hw = detect()
    info = {
        "cpu": hw.cpu_model or platform.processor() or platform.machine(),
        "cpu_isa": hw.isa(),  # figures differ by CPU family: bf16 is native only with AVX512-BF16/AMX
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": hw.gpus[0].name if hw.gpus else None,
        "python": platform.python_version(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    import importlib.metadata

    from ..rundir import versions

    try:
        trl = importlib.metadata.version("trl")
    except importlib.metadata.PackageNotFoundError:
        trl = None
    return {**info, "versions": {**versions(), "trl": trl}}
