"""Does the quickstart adapter keep its score once merged and exported? One table: the adapter on its 4-bit base,
the merged HF folder, and the GGUF file in f16 and q8_0 (read back through transformers, and through llama.cpp
when llama-cpp-python is installed), each scored on the same held-out prompts.

    python benchmarks/merge_export.py                    # trains the quickstart first (~5 min on 2 cores)
    python benchmarks/merge_export.py --run runs/quickstart
    make test-llama-cpp   # opt-in llama.cpp rows: builds llama-cpp-python for any AVX2 CPU (~6 min on 2 cores), tests it

For every exported form: the merge check peftkit ran while writing it (mean KL and top-1 agreement against the
trained model), exact match on the recipe's held-out prompts with greedy decoding, and how many answers are the
same text as the merged PyTorch model's. llama.cpp runs in a child process, so a crash there is a failed row with
its cause, not a lost benchmark. Writes benchmarks/results/merge_export.{json,md}.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _rows import ROOT, write_results
from rich.console import Console

import peftkit
from peftkit.data.prepare import prepare_data
from peftkit.evaluation.generate import generate_batched
from peftkit.evaluation.scoring import score_generations
from peftkit.artifacts.commands import export, merge
from peftkit.rundir import read_run


def _answers_torch(model, tokenizer, rows, stops, spec) -> list[str]:
    model.eval()
    return generate_batched(model, tokenizer, [r["prompt_ids"] for r in rows], max_new_tokens=spec.max_new_tokens,
                            batch_size=spec.batch_size or 16, stop_token_ids=stops)


def _llama_cpp_worker(gguf: str, prompts_json: str, out_json: str, max_new_tokens: int) -> None:
    """Greedy answers from llama.cpp, run in its own process: a native crash (SIGILL from a build for another CPU,
    a segfault on a bad file) must cost one row, not the whole benchmark."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=gguf, n_ctx=1024, n_threads=os.cpu_count() or 2, verbose=False, seed=0)
    # llama.cpp's own end-of-generation set, read from the GGUF: a lost stop token shows up here as run-on answers
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    stops = {t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)}
    out = []
    for prompt_ids in json.loads(Path(prompts_json).read_text()):  # same ids as torch (chat template applied)
        ids: list[int] = []
        for tok in llm.generate(prompt_ids, temp=0.0, top_k=1, reset=True):
            if tok in stops or len(ids) >= max_new_tokens:
                break
            ids.append(tok)
        out.append(ids)
    Path(out_json).write_text(json.dumps(out))


def _answers_llama_cpp(gguf: Path, tokenizer, rows, spec) -> list[str]:
    """Answers decoded with the run's tokenizer; raises RuntimeError naming the exit status when llama.cpp dies."""
    with tempfile.TemporaryDirectory() as tmp:
        prompts, answers = Path(tmp) / "prompts.json", Path(tmp) / "answers.json"
        prompts.write_text(json.dumps([list(r["prompt_ids"]) for r in rows]))
        proc = subprocess.run([sys.executable, __file__, "--llama-cpp-worker", str(gguf), str(prompts), str(answers),
                               str(spec.max_new_tokens)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            how = (f"killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
                   else f"exit status {proc.returncode}")
            last = proc.stderr.strip().splitlines()[-1:] or [""]
            raise RuntimeError(f"llama.cpp {how} {last[0]}".strip())
        return [tokenizer.decode(ids, skip_special_tokens=True) for ids in json.loads(answers.read_text())]


def _score(name: str, answers: list[str], refs: list[str], reference_answers: list[str] | None, **extra) -> dict:
    em = score_generations(["exact_match"], answers, refs)["exact_match"]
    row = {"form": name, "exact_match": em, **extra}
    if reference_answers is not None:
        row["same_answer_as_merged"] = sum(a.strip() == b.strip() for a, b in zip(answers, reference_answers)) / len(refs)
    print(f"   {name}: exact match {em:.3f}", flush=True)
    return row


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a finished quickstart run directory (default: train one)")
    parser.add_argument("--no-llama-cpp", action="store_true", help="skip llama.cpp even when it is installed")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    t0 = time.perf_counter()

    run = args.run
    if run is None:
        run = ROOT / "runs" / "bench-merge-export"
        recipe = peftkit.load_recipe(ROOT / "recipes" / "quickstart.yaml", [f"output.dir={run}", "output.overwrite=true"])
        peftkit.train(recipe, console=console)
    recipe = peftkit.load_recipe(run / "recipe.yaml")
    metrics = read_run(run).metrics.model_dump()
    tokenizer, data = prepare_data(recipe)
    rows = [r for r in (data.eval[: recipe.eval.max_examples] if recipe.eval.max_examples else data.eval)
            if "prompt_ids" in r]
    refs = [r["reference"] for r in rows]
    stops = data.stop_token_ids
    spec = recipe.eval

    table = [{"form": "adapter on its 4-bit base (peftkit train's own eval)",
              "exact_match": metrics["eval"]["after"]["exact_match"]}]
    print(f"== adapter: exact match {table[0]['exact_match']:.3f} (from {run}/metrics.json)", flush=True)

    from transformers import AutoModelForCausalLM

    merged = merge(run, out=run / "merged", force=True, console=console)
    print(f"== merged ({merged.dtype}): {merged.check.summary()}", flush=True)
    model = AutoModelForCausalLM.from_pretrained(str(merged.out_dir), dtype=torch.float32)
    merged_answers = _answers_torch(model, tokenizer, rows, stops, spec)
    table.append(_score(f"merged HF folder ({merged.dtype}, run in fp32)", merged_answers, refs, None,
                        mean_kl=merged.check.mean_kl, top1_agreement=merged.check.top1_agreement))
    del model

    llama_version = None  # read from the package metadata: the native library only ever loads in the worker
    if not args.no_llama_cpp:
        try:
            llama_version = importlib.metadata.version("llama-cpp-python")
        except importlib.metadata.PackageNotFoundError:
            print("== llama-cpp-python is not installed: the llama.cpp rows are left out", flush=True)
    for gguf_type in ("f16", "q8_0"):
        exp = export(run, format="gguf", gguf_type=gguf_type, out=run / "export" / f"gguf-{gguf_type}", force=True,
                     console=console)
        gguf = next(exp.out.glob("*.gguf"))
        file_mb = round(gguf.stat().st_size / 2**20, 1)
        print(f"== gguf {gguf_type}: {file_mb} MB", flush=True)
        model = AutoModelForCausalLM.from_pretrained(str(exp.out), gguf_file=gguf.name, dtype=torch.float32)
        answers = _answers_torch(model, tokenizer, rows, stops, spec)
        table.append(_score(f"GGUF {gguf_type} via transformers", answers, refs, merged_answers, file_mb=file_mb))
        del model
        if llama_version is not None:
            name = f"GGUF {gguf_type} via llama.cpp (llama-cpp-python {llama_version})"
            try:
                answers = _answers_llama_cpp(gguf, tokenizer, rows, spec)
            except RuntimeError as err:
                print(f"   {name}: {err}", flush=True)
                table.append({"form": name, "exact_match": None, "error": str(err)})
                continue
            table.append(_score(name, answers, refs, merged_answers, file_mb=file_mb))

    result = {
        "command": "python benchmarks/merge_export.py " + " ".join(argv), "run": str(run),
        "prompts": len(rows), "max_new_tokens": spec.max_new_tokens, "seconds": round(time.perf_counter() - t0),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "table": table,
    }
    write_results("merge_export", result, markdown(result))


def markdown(result: dict) -> str:
    lines = [
        "# Quickstart adapter: merged and exported",
        "",
        f"`{result['command'].strip()}`: exact match on the quickstart's {result['prompts']} held-out prompts, "
        f"greedy, up to {result['max_new_tokens']} new tokens, each form scored on the same prompts. Merge check: mean "
        "KL(trained || merged) and top-1 agreement over next-token distributions on 16 held-out rows, measured by "
        "`peftkit merge`. Same answer: the share of prompts whose answer is the same text as the merged PyTorch model's.",
        "",
        "| form | exact match | same answer as merged | merge mean KL | top-1 agreement | file MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["table"]:
        if r["exact_match"] is None:
            lines.append(f"| {r['form']} | failed: {r['error']} | | | | |")
            continue
        same = f"{r['same_answer_as_merged']:.2f}" if "same_answer_as_merged" in r else ""
        kl = f"{r['mean_kl']:.2e}" if "mean_kl" in r else ""
        top1 = f"{r['top1_agreement']:.3f}" if "top1_agreement" in r else ""
        lines.append(f"| {r['form']} | {r['exact_match']:.2f} | {same} | {kl} | {top1} | {r.get('file_mb', '')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--llama-cpp-worker"]:
        gguf_path, prompts_path, out_path, max_new = sys.argv[2:6]
        _llama_cpp_worker(gguf_path, prompts_path, out_path, int(max_new))
    else:
        main(sys.argv[1:])
