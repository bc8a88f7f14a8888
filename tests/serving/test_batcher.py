"""The batcher without HTTP: who shares a batch, adapters PEFT cannot mix, unloading, prompts as training
rendered them, a merged folder."""

from __future__ import annotations

import queue

import pytest
from support.tiny_run import tiny_recipe

import peftkit
from peftkit.serving.batcher import Batcher, Event, Job, Sampling
from peftkit.serving.pool import BASE, RequestProblem, open_pool

Q = [{"role": "user", "content": "add 2 and 5"}]


def _jobs(pool, models: list[str], sampling: Sampling = Sampling(6)) -> tuple[list[Job], list[queue.Queue]]:
    sinks = [queue.Queue() for _ in models]
    jobs = [Job(m, pool.chat_prompt(pool.get(m), Q), sampling, pool.get(m).stop_ids, emit=s.put)
            for m, s in zip(models, sinks)]
    return jobs, sinks


def _text(sink: queue.Queue) -> str:
    text = ""
    while (event := sink.get(timeout=60)).kind == "text":
        text += event.text
    assert event.kind == "done", event
    return text


def _answer(batcher: Batcher, pool, models: list[str]) -> list[str]:
    jobs, sinks = _jobs(pool, models)
    batcher.submit(jobs)
    return [_text(s) for s in sinks]


def test_the_oldest_job_leads_and_only_compatible_jobs_join(pool):
    batcher = Batcher(pool, max_batch=2)  # not started: the queue is taken by hand
    greedy, _ = _jobs(pool, ["adder", "counter", "base"])
    sampled, _ = _jobs(pool, ["counter"], Sampling(6, temperature=0.8))
    batcher.submit([greedy[0], sampled[0], greedy[1], greedy[2]])
    assert batcher._take() == [greedy[0], greedy[1]]  # two LoRA adapters share one call; the sampled job waits
    assert batcher._take() == [sampled[0]]           # and then leads: nothing overtakes it twice
    assert batcher._take() == [greedy[2]]


def test_an_adapter_peft_cannot_mix_is_batched_alone(runs, tmp_path):
    """LoHa is not mixed (only LoRA is): its jobs and the base's take turns, each answer as when asked alone."""
    root = runs["adder"].parent
    run = tmp_path / "loha"
    peftkit.train(tiny_recipe(root / "base", root / "sums.jsonl", run, adapter={"method": "loha"},
                              train={"max_steps": 2, "lr": 5e-2}, eval={"before": False, "metrics": ["loss"]}))
    pool = open_pool([str(run)])
    assert not pool.get("loha").lora and not pool.can_mix([BASE, "loha"])
    batcher = Batcher(pool, max_batch=8).start()
    try:
        alone = {m: _answer(batcher, pool, [m])[0] for m in (BASE, "loha")}
        calls = batcher.batches
        together = _answer(batcher, pool, [BASE, "loha", BASE, "loha"])
        assert together == [alone[BASE], alone["loha"], alone[BASE], alone["loha"]]
        assert batcher.batches - calls in (2, 3)  # by model, never mixed (a job may arrive after its turn began)
    finally:
        batcher.close()


def test_unloading_every_adapter_leaves_the_base_answering(runs):
    pool = open_pool([str(runs["adder"])])
    batcher = Batcher(pool).start()
    try:
        base = _answer(batcher, pool, [BASE])[0]
        pool.remove("adder")
        assert pool.names() == [BASE]
        jobs, sinks = _jobs(pool, [BASE])
        batcher.submit(jobs)
        assert _text(sinks[0]) == base
        with pytest.raises(RequestProblem, match="does not exist"):
            pool.remove("adder")
        pool.add_run(runs["adder"])
        assert pool.names() == [BASE, "adder"]
    finally:
        batcher.close()


def test_a_job_for_an_unloaded_model_gets_an_error(runs):
    pool = open_pool([str(runs["adder"]), str(runs["counter"])])
    batcher = Batcher(pool)
    jobs, sinks = _jobs(pool, ["counter", "adder"])
    batcher.submit(jobs)
    pool.remove("counter")
    batcher.start()
    try:
        assert sinks[0].get(timeout=60) == Event("error", text="the model `counter` was unloaded")
        assert _text(sinks[1])
    finally:
        batcher.close()


def test_prompts_render_as_training_did(pool, runs):
    served = pool.get("adder")
    expected = pool.tokenizer.apply_chat_template(Q, add_generation_prompt=True, tokenize=False)
    assert pool.tokenizer.decode(pool.chat_prompt(served, Q)) == expected
    with pytest.raises(RequestProblem, match="end with a user"):
        pool.chat_prompt(served, Q + [{"role": "assistant", "content": "7"}])
    with pytest.raises(RequestProblem, match="does not exist"):
        pool.get("nope")


def test_a_merged_folder_is_served_under_its_own_name_with_the_runs_template(pool, runs, tmp_path):
    import shutil

    run = tmp_path / "adder"
    shutil.copytree(runs["adder"], run)
    folder = peftkit.merge(run, check=False).out_dir
    merged = open_pool([str(folder)])
    assert merged.names() == ["merged"]
    with pytest.raises(RequestProblem, match="base model"):
        merged.remove("merged")
    batcher, adapter = Batcher(merged).start(), Batcher(pool).start()
    try:
        assert _answer(batcher, merged, ["merged"]) == _answer(adapter, pool, ["adder"])
    finally:
        batcher.close()
        adapter.close()


def test_a_recipe_alone_serves_its_base_with_the_recipes_template(pool, runs):
    base_only = open_pool([str(runs["adder"] / "recipe.yaml")])
    assert base_only.names() == [BASE]
    batcher, shared = Batcher(base_only).start(), Batcher(pool).start()
    try:
        assert _answer(batcher, base_only, [BASE]) == _answer(shared, pool, [BASE])
    finally:
        batcher.close()
        shared.close()
    with pytest.raises(peftkit.PeftkitError, match="neither a run directory"):
        open_pool([str(runs["adder"] / "missing")])
