"""peftkit serve driven by the official openai client: models, chat and completions (stream or not), greedy
answers equal to eval's generation and to plain transformers + PEFT, hot-loading, errors in OpenAI's shape."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import openai
import pytest
import torch
from openai import OpenAI
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from peftkit.evaluation.generate import generate_batched
from peftkit.serving.app import Limits
from peftkit.serving.server import start_background

KEY = "sk-test"
QUESTION = [{"role": "user", "content": "add 3 and 4"}]


@pytest.fixture(scope="module")
def server(pool):
    bg = start_background(pool, api_key=KEY, limits=Limits(max_prompt_tokens=64, max_tokens=32, max_body_bytes=4096))
    yield bg
    bg.stop()


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=server.url, api_key=KEY, max_retries=0, timeout=60)


def _healthy(server) -> None:
    assert httpx.get(server.url.removesuffix("/v1") + "/health").json()["status"] == "ok"


def _ask(client, model: str, messages=QUESTION, **kw) -> str:
    kw = {"temperature": 0, "max_tokens": 8, **kw}
    return client.chat.completions.create(model=model, messages=messages, **kw).choices[0].message.content


def test_models_are_the_base_and_one_per_run(client):
    assert [m.id for m in client.models.list()] == ["base", "adder", "counter"]
    assert client.models.retrieve("adder").owned_by == "peftkit"


def _plain_peft(base_dir, run_dir, messages, max_new_tokens: int) -> tuple[list[int], str]:
    """The reference: transformers + PEFT by hand, the tokenizer's chat template, greedy."""
    tok = AutoTokenizer.from_pretrained(base_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
                                      str(run_dir / "adapter")).eval()
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=[tok.eos_token_id],
                         pad_token_id=tok.pad_token_id)[0, len(ids):].tolist()
    if tok.eos_token_id in out:
        out = out[: out.index(tok.eos_token_id)]
    return list(ids), tok.decode(out, skip_special_tokens=True)


def test_greedy_answers_equal_eval_and_plain_peft(client, pool, runs):
    answers = {}
    for name in ("adder", "counter"):
        served = pool.get(name)
        prompt = pool.chat_prompt(served, QUESTION)
        plain_ids, plain = _plain_peft(runs[name].parent / "base", runs[name], QUESTION, 12)
        assert prompt == plain_ids  # the training renderer gives the chat template's own tokens
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(runs[name].parent / "base"),
                                          str(runs[name] / "adapter"))
        (evaluated,) = generate_batched(model, pool.tokenizer, [prompt], max_new_tokens=12, batch_size=1,
                                        stop_token_ids=served.stop_ids)
        answers[name] = _ask(client, name, max_tokens=12)
        assert answers[name] == evaluated == plain, name
    assert answers["adder"] != answers["counter"]
    assert _ask(client, "base", max_tokens=12) not in answers.values()


def test_the_server_gives_peftkit_evals_own_predictions(client, runs):
    """`peftkit eval`'s sample generations on held-out rows, re-asked as raw prompts through /v1/completions."""
    from peftkit.evaluation.compare import evaluate_models

    table = evaluate_models([str(runs["adder"])], merged=False, n_samples=3)
    assert len(table.samples) == 3
    for sample in table.samples:
        for name, model in (("base", "base"), (str(runs["adder"]), "adder")):
            served = client.completions.create(model=model, prompt=sample["prompt"], temperature=0, max_tokens=8)
            assert served.choices[0].text == sample["predictions"][name], (model, sample["prompt"])


def test_stream_equals_whole_and_counts_usage(client, server):
    whole = client.chat.completions.create(model="counter", messages=QUESTION, temperature=0, max_tokens=10)
    chunks = list(client.chat.completions.create(model="counter", messages=QUESTION, temperature=0, max_tokens=10,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == \
        [whole.choices[0].finish_reason]
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()
    assert whole.usage.prompt_tokens == 19 and 1 <= whole.usage.completion_tokens <= 10
    _healthy(server)


def test_completions_n_seed_and_stop(client):
    a = client.completions.create(model="adder", prompt="add 1 and 2", max_tokens=6, temperature=1.0, seed=7, n=2)
    b = client.completions.create(model="adder", prompt="add 1 and 2", max_tokens=6, temperature=1.0, seed=7, n=2)
    assert [c.text for c in a.choices] == [c.text for c in b.choices] and [c.index for c in a.choices] == [0, 1]
    greedy = client.completions.create(model="counter", prompt="count 3", max_tokens=8, temperature=0).choices[0]
    assert greedy.finish_reason == "length" and len(greedy.text) > 2
    cut = client.completions.create(model="counter", prompt="count 3", max_tokens=8, temperature=0,
                                    stop=[greedy.text[2:4]]).choices[0]
    assert cut.finish_reason == "stop" and cut.text == greedy.text[: greedy.text.index(greedy.text[2:4])]


def test_hot_load_and_unload_a_third_run(client, server, runs):
    r = httpx.post(server.url + "/adapters", json={"path": str(runs["third"])},
                   headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and r.json()["id"] == "third"
    assert "third" in [m.id for m in client.models.list()]
    third = _ask(client, "third", max_tokens=12)
    _, plain = _plain_peft(runs["third"].parent / "base", runs["third"], QUESTION, 12)
    assert third == plain
    again = httpx.post(server.url + "/adapters", json={"path": str(runs["third"])},
                       headers={"Authorization": f"Bearer {KEY}"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "name_taken"
    gone = httpx.delete(server.url + "/adapters/third", headers={"Authorization": f"Bearer {KEY}"})
    assert gone.status_code == 200 and "third" not in [m.id for m in client.models.list()]
    _healthy(server)


def test_a_run_on_another_base_is_refused_in_one_line(server, runs, tmp_path):
    copy = tmp_path / "foreign"
    shutil.copytree(runs["third"], copy)
    meta = json.loads((copy / "meta.json").read_text())
    meta["base"]["fingerprint"] = "sha256-sampled:0000"
    (copy / "meta.json").write_text(json.dumps(meta))
    r = httpx.post(server.url + "/adapters", json={"path": str(copy)}, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "base_mismatch"
    assert "sha256-sampled:0000" in r.json()["error"]["message"] and "\n" not in r.json()["error"]["message"]
    _healthy(server)


def test_unknown_model_is_404_in_openai_shape(client, server):
    with pytest.raises(openai.NotFoundError) as caught:
        _ask(client, "nope")
    assert caught.value.body["code"] == "model_not_found" and caught.value.body["param"] == "model"
    _healthy(server)


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"model": "adder"}',
                                  b'{"model": "adder", "messages": [{"role": "wizard", "content": "hi"}]}',
                                  b'{"model": "adder", "messages": [{"role": "user", "content": "hi"}], "n": 0}'])
def test_malformed_requests_are_400(server, body):
    r = httpx.post(server.url + "/chat/completions", content=body,
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    _healthy(server)


def test_limits_are_4xx(client, server):
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(client, "adder", messages=[{"role": "user", "content": "add 1 and 2 " * 40}])
    assert caught.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        _ask(client, "adder", max_tokens=1000)
    with pytest.raises(openai.BadRequestError, match="n x prompts"):
        client.completions.create(model="adder", prompt=["add 1 and 2"] * 5, n=2, max_tokens=2)
    big = httpx.post(server.url + "/chat/completions", content=b" " * 5000,
                     headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"
    _healthy(server)


def test_wrong_or_missing_key_is_401(server):
    wrong = OpenAI(base_url=server.url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.models.list()
    assert caught.value.body["code"] == "invalid_api_key"
    assert httpx.get(server.url + "/models").status_code == 401
    _healthy(server)


def test_64_concurrent_requests_across_two_adapters(client, server):
    """Every one answered, each exactly as when asked alone; the batcher put several in one generate call."""
    questions = [(("adder", "counter")[i % 2], [{"role": "user", "content": f"add {i % 7} and {i % 5}"}])
                 for i in range(64)]
    alone = {(m, q[0]["content"]): _ask(client, m, q) for m, q in questions}  # one at a time
    batches_before = server.batcher.batches
    with ThreadPoolExecutor(64) as ex:
        answers = list(ex.map(lambda mq: _ask(client, *mq), questions))
    assert all(isinstance(a, str) for a in answers)
    assert [alone[(m, q[0]["content"])] for m, q in questions] == answers
    assert server.batcher.batches - batches_before < 64  # batched, not one at a time
    _healthy(server)


def test_shutdown_finishes_requests_in_progress(pool, client):
    """stop() is what SIGTERM does: no new connections, and a request already being answered still gets its answer."""
    import threading

    bg = start_background(pool)
    local = OpenAI(base_url=bg.url, api_key="none", max_retries=0, timeout=60)
    answer: list[str] = []
    with pool.lock:  # the worker cannot generate yet: the request is surely in progress when the stop comes
        asking = threading.Thread(target=lambda: answer.append(_ask(local, "adder", max_tokens=12)))
        asking.start()
        for _ in range(500):  # until the server counts it in progress
            if httpx.get(bg.url.removesuffix("/v1") + "/health").json()["in_flight"] == 1:
                break
            threading.Event().wait(0.01)
        stopping = threading.Thread(target=bg.stop)
        stopping.start()
        threading.Event().wait(0.3)
    asking.join(30)
    stopping.join(30)
    assert answer == [_ask(client, "adder", max_tokens=12)]  # the whole answer, as the other server gives it
    assert not bg.thread.is_alive() and not bg.batcher._thread.is_alive()


def test_requests_over_the_limit_get_429_and_a_dropped_stream_frees_its_place(pool):
    import threading

    bg = start_background(pool, limits=Limits(max_concurrent=1))
    local = OpenAI(base_url=bg.url, api_key="none", max_retries=0, timeout=60)
    try:
        answer: list[str] = []
        with pool.lock:  # the first request waits for the model, so it is surely in progress
            first = threading.Thread(target=lambda: answer.append(_ask(local, "adder")))
            first.start()
            for _ in range(500):
                if httpx.get(bg.url.removesuffix("/v1") + "/health").json()["in_flight"] == 1:
                    break
                threading.Event().wait(0.01)
            with pytest.raises(openai.RateLimitError) as caught:
                _ask(local, "counter")
            assert caught.value.body["code"] == "rate_limit_exceeded"
        first.join(60)
        assert answer and answer[0] == _ask(local, "adder")
        stream = local.chat.completions.create(model="counter", messages=QUESTION, temperature=0, max_tokens=32,
                                               stream=True)
        next(iter(stream))  # the role chunk; then the client goes away
        stream.close()
        for _ in range(500):
            if httpx.get(bg.url.removesuffix("/v1") + "/health").json()["in_flight"] == 0:
                break
            threading.Event().wait(0.01)
        assert _ask(local, "counter", max_tokens=10) == _ask(local, "counter", max_tokens=10)
    finally:
        bg.stop()
