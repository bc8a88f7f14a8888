"""The adapter section -> a PEFT method attached to the frozen base, its optimizer needs, a parameter report.

    targets.py       presets / names / layers -> module names     methods.py   spec -> PEFT config per method
    attach.py        attach_adapter (fp32 adapter weights)        loftq.py     LoftQ start on a 4-bit base
    optimization.py  LoRA+ groups, AdaLoRA per-step hook          report.py    trainable / total parameters
    estimate.py      trainable parameters from config.json alone (preflight's disk check, before any weights load)
"""

from .attach import attach_adapter
from .methods import peft_config
from .optimization import after_optimizer_step, param_groups
from .report import ParamReport, param_report
from .targets import HEADS, PRESETS, linear_module_names, resolve_targets

__all__ = [
    "HEADS", "PRESETS", "ParamReport", "after_optimizer_step", "attach_adapter", "linear_module_names",
    "param_groups", "param_report", "peft_config", "resolve_targets",
]
