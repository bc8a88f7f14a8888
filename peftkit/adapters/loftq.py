"""LoftQ start for LoRA on a 4-bit base, on any device.

The base stays the ordinary 4-bit quantization Q(W) that `load_base` produces, so the saved adapter needs nothing
but that base. Only A and B move: B·A·scale becomes the best rank-r approximation of the quantization error
W - deq(Q(W)), read from the un-quantized weights on disk. (This is LoftQ with one alternation; PEFT's own
`replace_lora_weights_loftq` does the same but only on CUDA/XPU.)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from peft.utils.integrations import dequantize_module_weight
from safetensors import safe_open

from ..errors import ModelError, Problem, RecipeError

PEFT_PREFIX = "base_model.model."


def _weight_files(folder: Path) -> dict[str, Path]:
    """Tensor name -> safetensors file holding it (single file or sharded index)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: folder / file for name, file in weight_map.items()}
    single = folder / "model.safetensors"
    if single.is_file():
        with safe_open(single, framework="pt") as f:
            names = f.keys()  # a safetensors handle, not a dict
        return dict.fromkeys(names, single)
    raise ModelError(f"adapter.init loftq reads the un-quantized base weights, but {folder} holds no "
                     "model.safetensors: use a local base folder, or another adapter.init")


def _checkpoint_key(module_name: str, files: dict[str, Path], prefix: str | None) -> str | None:
    key = module_name.removeprefix(PEFT_PREFIX) + ".weight"
    # a task model ("bert.encoder...") may come from a checkpoint of the bare encoder ("encoder..."), or back
    candidates = [key] + ([key.removeprefix(prefix + "."), f"{prefix}.{key}"] if prefix else [])
    return next((k for k in candidates if k in files), None)


@torch.no_grad()
def loftq_init(model: PeftModel, adapter_name: str = "default") -> int:
    """Set A and B of every LoRA layer over a 4-bit weight; returns how many layers were set."""
    base_model = model.get_base_model()
    files = _weight_files(Path(str(getattr(base_model, "name_or_path", "") or ".")))
    prefix = getattr(base_model, "base_model_prefix", None)
    done = 0
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer) or adapter_name not in module.lora_A:
            continue
        base = module.get_base_layer()
        if base.weight.__class__.__name__ != "Params4bit":
            continue  # a module kept un-quantized (skip_modules) has no quantization error to absorb
        key = _checkpoint_key(name, files, prefix)
        if key is None:
            missing = name.removeprefix(PEFT_PREFIX)
            raise ModelError(f"adapter.init loftq: no weight for {missing} in the base's safetensors")
        with safe_open(files[key], framework="pt") as f:
            original = f.get_tensor(key).to(base.weight.device, torch.float32)  # on the 4-bit weight's device
        error = original - dequantize_module_weight(base).float()
        u, s, vh = torch.linalg.svd(error, full_matrices=False)
        r, scale = module.r[adapter_name], module.scaling[adapter_name]
        root = (s[:r] / scale).sqrt()  # split evenly: B·A·scale = U_r S_r Vh_r
        a, b = module.lora_A[adapter_name].weight, module.lora_B[adapter_name].weight
        a.data = (root[:, None] * vh[:r]).to(a.device, a.dtype)
        b.data = (u[:, :r] * root).to(b.device, b.dtype)
        done += 1
    if not done:
        raise RecipeError(None, [Problem("adapter.init", "loftq found no 4-bit layer among adapter.targets "
                                         "(all kept un-quantized?)", "loftq", True)])
    return done
