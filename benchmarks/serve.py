"""peftkit serve under load: N concurrent chat requests spread over two adapters on one base, answered with
mixed-adapter batching (--max-batch) and one at a time (max batch 1), through the real HTTP API and the openai
client on localhost.

    python benchmarks/serve.py                                   # runs/quickstart + runs/quickstart-dpo (4-bit SmolLM2)
    python benchmarks/serve.py --tiny                            # two tiny runs trained here first (seconds)
    python benchmarks/serve.py --requests 64 --max-tokens 24 --sequential 16

For each mode: requests/s and completion tokens/s over the whole wave (first request sent to last answer), and
p50 / p95 latency per request (sent to answered, so queueing counts). Greedy decoding: every answer of the batched
wave is compared with the same request answered one at a time. `--sequential K` times the one-at-a-time wave on
the first K requests only (it is the slow one); the comparison covers those K. Writes
benchmarks/results/serve.{json,md}, with the CPU model and vector-unit flags.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _rows import ROOT, machine, write_results
from openai import OpenAI

from peftkit.data.builtin import person_extraction
from peftkit.serving.pool import open_pool
from peftkit.serving.server import start_background


def _tiny_runs(root: Path) -> list[str]:
    sys.path.insert(0, str(ROOT / "tests"))
    from support.tiny_run import tiny_recipe, write_base, write_chat, write_long_chat

    import peftkit

    base = write_base(root / "base")
    out = []
    for name, data, seed in (("adder", write_chat(root / "sums.jsonl"), 0),
                             ("counter", write_long_chat(root / "counts.jsonl"), 1)):
        peftkit.train(tiny_recipe(base, data, root / name, train={"max_steps": 3, "lr": 5e-2, "seed": seed},
                                  eval={"before": False, "metrics": ["loss"]}))
        out.append(str(root / name))
    return out


def _questions(n: int, tiny: bool) -> list[str]:
    if tiny:
        return [f"add {i % 7} and {(3 * i) % 5}" for i in range(n)]
    return [row["messages"][0]["content"] for row in person_extraction(0, n, seed=1234).eval]


def _wave(url: str, requests: list[tuple[str, str]], max_tokens: int, concurrency: int) -> dict:
    client = OpenAI(base_url=url, api_key="none", max_retries=0, timeout=3600)

    def ask(req):
        model, question = req
        t0 = time.perf_counter()
        r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                           temperature=0, max_tokens=max_tokens)
        return r.choices[0].message.content, r.usage.completion_tokens, time.perf_counter() - t0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        results = list(ex.map(ask, requests))
    wall = time.perf_counter() - t0
    latencies = sorted(r[2] for r in results)
    tokens = sum(r[1] for r in results)
    return {"requests": len(requests), "wall_s": round(wall, 2), "requests_per_s": round(len(requests) / wall, 3),
            "completion_tokens": tokens, "tokens_per_s": round(tokens / wall, 2),
            "p50_latency_s": round(statistics.median(latencies), 2),
            "p95_latency_s": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 2),
            "answers": [r[0] for r in results]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs=2, default=["runs/quickstart", "runs/quickstart-dpo"], metavar="RUN_DIR")
    ap.add_argument("--tiny", action="store_true", help="two tiny runs trained first, instead of --runs")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--sequential", type=int, help="requests in the one-at-a-time wave (default: all)")
    ap.add_argument("--name", default="serve")
    args = ap.parse_args()

    runs = _tiny_runs(Path(tempfile.mkdtemp(prefix="serve-bench-"))) if args.tiny else args.runs
    t0 = time.perf_counter()
    pool = open_pool(runs)
    load_s = time.perf_counter() - t0
    adapters = [n for n in pool.names() if n != "base"]
    questions = _questions(args.requests, args.tiny)
    requests = [(adapters[i % 2], q) for i, q in enumerate(questions)]
    sequential = requests[: args.sequential or len(requests)]

    waves = {}
    for mode, max_batch, reqs in (("batched", args.max_batch, requests), ("one_at_a_time", 1, sequential)):
        bg = start_background(pool, max_batch=max_batch)
        try:
            _wave(bg.url, reqs[:2], args.max_tokens, 2)  # warm-up: first-call costs out of the timed wave
            calls = bg.batcher.batches
            waves[mode] = {"max_batch": max_batch, **_wave(bg.url, reqs, args.max_tokens, len(reqs))}
            waves[mode]["generate_calls"] = bg.batcher.batches - calls
        finally:
            bg.stop()
    batched, single = waves["batched"], waves["one_at_a_time"]
    same = sum(a == b for a, b in zip(batched["answers"], single["answers"]))
    result = {
        "machine": machine(), "runs": [str(r) for r in runs] if not args.tiny else ["tiny adder", "tiny counter"],
        "base": pool.recipe.model.base, "quantization": pool.recipe.model.quantization.model_dump(),
        "load_s": round(load_s, 1), "requests": args.requests, "max_tokens": args.max_tokens,
        "identical_greedy_answers": f"{same}/{len(single['answers'])}",
        "speedup_tokens_per_s": round(batched["tokens_per_s"] / single["tokens_per_s"], 2),
        "waves": waves,
    }
    write_results(args.name, result, _markdown(result))


def _bits(quantization: dict) -> str:
    return f"{quantization['bits']}-bit" if quantization.get("bits") else "not quantized"


def _markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"# peftkit serve: {r['requests']} concurrent chat requests over two adapters", "",
             f"Base {r['base']} ({_bits(r['quantization'])}), adapters {', '.join(r['runs'])}; "
             f"greedy, max_tokens {r['max_tokens']}; localhost HTTP through the openai client. "
             f"CPU: {m['cpu']} ({', '.join(m['cpu_flags'])}), {m['torch_threads']} torch threads, "
             f"load {m['load_average']}, {m['date']}. Pool load {r['load_s']} s.", "",
             "| mode | max batch | requests | generate calls | wall s | requests/s | tokens/s | p50 latency s "
             "| p95 latency s |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for mode, w in r["waves"].items():
        lines.append(f"| {mode} | {w['max_batch']} | {w['requests']} | {w['generate_calls']} | {w['wall_s']} | "
                     f"{w['requests_per_s']} | {w['tokens_per_s']} | {w['p50_latency_s']} | {w['p95_latency_s']} |")
    lines += ["", f"Batched / one at a time, completion tokens/s: {r['speedup_tokens_per_s']}x. Greedy answers of the "
              f"batched wave identical to the same requests answered one at a time: {r['identical_greedy_answers']}.",
              "", "Written by benchmarks/serve.py."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
