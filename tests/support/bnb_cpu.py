"""What bitsandbytes does on the CPU the tests run on, observed rather than assumed from one CPU family.

On CPUs with AVX512-BF16 (bitsandbytes 0.50 asks its native library) a Linear4bit repacks its weight in place for
a backward-less inference kernel the first time it runs in eval mode; on other CPUs (an Intel Xeon with AVX-512
VNNI but no AVX512-BF16, say) it never does. Tests that count or check the repack protection
(peftkit.modeling.load.keep_cpu_4bit_differentiable) take the expectation from here, so they hold on every CPU and
still fail where the repack happens and the protection did not stop it.
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def bnb_repacks_4bit_on_this_cpu() -> bool:
    """Whether a fresh, unprotected Linear4bit's weight changes (shape or bytes) on one eval-mode forward here."""
    import bitsandbytes as bnb

    torch.manual_seed(0)
    layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4").to("cpu")
    before = layer.weight.data.clone()
    layer.eval()
    with torch.no_grad():
        layer(torch.randn(2, 64, dtype=torch.bfloat16))
    after = layer.weight.data
    return after.shape != before.shape or not torch.equal(after, before)


def linear4bit_count(model: torch.nn.Module) -> int:
    import bitsandbytes as bnb

    return sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
