"""Reload a quickstart run's adapter with plain transformers + PEFT (no peftkit code on the model path) and
score exact match on the same held-out prompts, rendered with the tokenizer's own chat template.

    python benchmarks/quickstart_plain_peft.py runs/quickstart

Writes benchmarks/results/quickstart_plain_peft.json and .md next to the run's own figure.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import yaml
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from peftkit.data.builtin import load_builtin  # only the held-out rows: same generator, same seed

RESULTS = Path(__file__).parent / "results"


def main(run_dir: str) -> None:
    run = Path(run_dir)
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    meta = json.loads((run / "meta.json").read_text())
    base_path = meta["base"]["resolved"]
    q = recipe["model"]["quantization"]
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=q["quant_type"],
                             bnb_4bit_use_double_quant=q["double_quant"], bnb_4bit_compute_dtype=torch.bfloat16)
    tok = AutoTokenizer.from_pretrained(run / "adapter")
    tok.padding_side = "left"
    base = AutoModelForCausalLM.from_pretrained(base_path, quantization_config=bnb, device_map={"": "cpu"},
                                                dtype=torch.bfloat16, attn_implementation="eager")
    model = PeftModel.from_pretrained(base, run / "adapter").eval()

    seed = recipe["data"].get("seed") or recipe["train"]["seed"]
    rows = load_builtin(recipe["data"]["path"].removeprefix("builtin:"), seed).eval
    rows = rows[: recipe["eval"]["max_examples"]]
    prompts = [tok.apply_chat_template(r["messages"][:-1], add_generation_prompt=True, tokenize=False) for r in rows]
    refs = [r["messages"][-1]["content"] for r in rows]
    end = tok.convert_tokens_to_ids("<|im_end|>")
    preds: list[str] = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(prompts), 32):
            enc = tok(prompts[i : i + 32], return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(**enc, max_new_tokens=recipe["eval"]["max_new_tokens"], do_sample=False,
                                 eos_token_id=end, pad_token_id=tok.pad_token_id)
            preds += tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    exact = sum(p.strip() == r.strip() for p, r in zip(preds, refs)) / len(refs)
    peftkit_em = json.loads((run / "metrics.json").read_text())["eval"]["after"]["exact_match"]
    result = {"run": str(run), "examples": len(refs), "exact_match_plain_peft": exact,
              "exact_match_peftkit": peftkit_em, "seconds": round(time.perf_counter() - t0, 1),
              "command": "python benchmarks/quickstart_plain_peft.py " + run_dir}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "quickstart_plain_peft.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "quickstart_plain_peft.md").write_text(
        "| held-out examples | exact match, peftkit eval | exact match, plain transformers + PEFT |\n"
        "| ---: | ---: | ---: |\n"
        f"| {len(refs)} | {peftkit_em:.3f} | {exact:.3f} |\n"
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/quickstart")
