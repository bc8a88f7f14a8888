"""How many parameters an adapted model trains, out of how many."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ParamReport:
    trainable: int
    total: int

    @property
    def share(self) -> float:
        return self.trainable / max(self.total, 1)

    def __str__(self) -> str:
        return f"trainable {self.trainable:,} / {self.total:,} parameters ({100 * self.share:.3f}%)"


def param_report(model: torch.nn.Module) -> ParamReport:
    trainable = total = 0
    for p in model.parameters():
        # bitsandbytes packs two 4-bit values per byte: count logical parameters, not storage elements
        n = p.numel() * 2 if p.__class__.__name__ == "Params4bit" else p.numel()
        total += n
        if p.requires_grad:
            trainable += n
    return ParamReport(trainable=trainable, total=total)
