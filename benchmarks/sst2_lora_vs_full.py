"""SST-2 dev accuracy: peftkit LoRA (recipes/minilm-lora-sst2.yaml) vs a full fine-tune of the same MiniLM on
the same tokenized examples, steps, batch size, warmup and seed.

    python benchmarks/sst2_lora_vs_full.py [KEY=VALUE ...]     # overrides apply to both routes

The full fine-tune uses lr 5e-5 (the usual BERT-family full fine-tuning rate; LoRA's 5e-4 would wreck a full
fine-tune) and a plain PyTorch loop over the same batches. Writes benchmarks/results/sst2_lora_vs_full.{json,md}.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

import peftkit
from peftkit.data import make_collator
from peftkit.data.prepare import prepare_data
from peftkit.evaluation.scoring import score_labels
from peftkit.modeling.zoo import resolve_base
from peftkit.training.batches import Batches
from peftkit.training.optim import build_scheduler

RESULTS = Path(__file__).parent / "results"
FULL_LR = 5e-5


def full_finetune(recipe, tokenizer, data) -> dict:
    torch.manual_seed(recipe.train.seed)
    path = resolve_base(recipe.model.base).path_or_id
    cfg = AutoConfig.from_pretrained(path, num_labels=len(data.label_names))
    model = AutoModelForSequenceClassification.from_pretrained(path, config=cfg, dtype=torch.float32)
    collate = make_collator(tokenizer, packing=False, task=recipe.model.task)
    sampler = Batches(len(data.train), recipe.train.batch_size, recipe.train.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=FULL_LR, weight_decay=0.01)
    sched = build_scheduler(opt, recipe.train)
    t0 = time.perf_counter()
    model.train()
    for _, idx in zip(range(recipe.train.max_steps), sampler):  # the LoRA run's batch order
        batch = collate([data.train[i] for i in idx])
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.train.max_grad_norm or 1.0)
        opt.step(), sched.step(), opt.zero_grad()
    train_s = time.perf_counter() - t0
    model.eval()
    preds, refs = [], []
    with torch.inference_mode():
        for i in range(0, len(data.eval), 64):
            batch = collate(data.eval[i : i + 64])
            refs += batch.pop("labels").tolist()
            preds += model(**batch).logits.argmax(-1).tolist()
    scores = score_labels(["accuracy", "f1"], preds, refs, num_labels=len(data.label_names))
    trainable = sum(p.numel() for p in model.parameters())
    return {**scores, "trainable_params": trainable, "train_s": round(train_s, 1), "lr": FULL_LR}


def main(overrides: list[str]) -> None:
    recipe = peftkit.load_recipe(Path(__file__).parents[1] / "recipes" / "minilm-lora-sst2.yaml",
                                 [*overrides, "output.overwrite=true", "output.dir=runs/bench-sst2-lora"])
    lora = peftkit.train(recipe)
    tokenizer, data = prepare_data(recipe)
    full = full_finetune(recipe, tokenizer, data)
    after = lora.metrics.eval.after
    result = {
        "command": "python benchmarks/sst2_lora_vs_full.py " + " ".join(overrides),
        "train_examples": len(data.train), "dev_examples": len(data.eval),
        "steps": recipe.train.max_steps, "batch_size": recipe.train.batch_size, "seed": recipe.train.seed,
        "lora": {"accuracy": after["accuracy"], "f1": after["f1"], "trainable_params": lora.params.trainable,
                 "train_s": round(lora.metrics.train.train_s, 1), "lr": recipe.train.lr},
        "full_finetune": full,
        "accuracy_gap_points": round(100 * (full["accuracy"] - after["accuracy"]), 2),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sst2_lora_vs_full.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "sst2_lora_vs_full.md").write_text(
        f"SST-2 dev ({result['dev_examples']} sentences), MiniLM-L6, {result['train_examples']} training examples, "
        f"{result['steps']} steps x batch {result['batch_size']}, seed {result['seed']}.\n\n"
        "| route | dev accuracy | dev F1 | trainable params | train s |\n| --- | ---: | ---: | ---: | ---: |\n"
        f"| peftkit LoRA r={recipe.adapter.rank} + head | {after['accuracy']:.4f} | {after['f1']:.4f} | "
        f"{lora.params.trainable:,} | {result['lora']['train_s']} |\n"
        f"| full fine-tune | {full['accuracy']:.4f} | {full['f1']:.4f} | {full['trainable_params']:,} | {full['train_s']} |\n"
        f"\nGap: {result['accuracy_gap_points']} accuracy points (full minus LoRA).\n"
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
