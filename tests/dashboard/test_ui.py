"""peftkit ui in its own process on a free localhost port, driven by headless Chromium: both runs listed, one
opened with its loss plot, two compared, and a run still training updating on the page as steps land."""

import json
import subprocess
import sys
import time
import urllib.request

import pytest
from support.browser import browser_page
from support.tiny_run import tiny_recipe, write_base, write_chat

import peftkit
from peftkit.rundir import append_curve
from peftkit.serving.server import free_port


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui")
    base, chat = write_base(tmp / "base"), write_chat(tmp / "chat.jsonl")
    runs = tmp / "runs"
    peftkit.train(tiny_recipe(base, chat, runs / "alpha", train={"max_steps": 4}))
    peftkit.train(tiny_recipe(base, chat, runs / "beta", train={"max_steps": 4, "lr": 1e-2}))
    return runs


@pytest.fixture(scope="module")
def ui(root):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "peftkit", "ui", "--runs", str(root), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"peftkit ui did not start: {proc.communicate()[1][-2000:]}")
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(10)


def _plot_width(page, key: str) -> int:
    page.wait_for_function(f"() => {{ const i = document.querySelector('img[data-key=\"{key}\"]'); "
                           "return i && i.complete && i.naturalWidth > 0; }")
    return page.eval_on_selector(f'img[data-key="{key}"]', "i => i.naturalWidth")


def test_lists_both_runs_opens_one_and_compares(ui, tmp_path):
    with browser_page() as (page, errors):
        page.goto(ui)
        page.wait_for_selector('#runs li[data-run="beta"]')
        names = page.eval_on_selector_all("#runs li", "lis => lis.map(li => li.dataset.run)")
        assert sorted(names) == ["alpha", "beta"]
        page.click('#runs li[data-run="alpha"] a.open')
        page.wait_for_function("() => document.getElementById('title').textContent === 'alpha'")
        assert _plot_width(page, "loss") > 300
        assert "step 4 of 4 (finished)" in page.inner_text("#run-status")
        assert page.query_selector("#eval-table") is not None
        page.screenshot(path=str(tmp_path / "run.png"), full_page=True)
        page.check('#runs input[value="alpha"]')
        page.check('#runs input[value="beta"]')
        page.click("#compare")
        page.wait_for_function("() => ['Compare: alpha, beta', 'Compare: beta, alpha']"  # list order: newest first
                               ".includes(document.getElementById('title').textContent)")
        assert _plot_width(page, "loss") > 300
        # header + both runs' loss and exact_match
        page.wait_for_function("() => document.querySelectorAll('#eval-table tr').length >= 5")
    assert not errors, errors


def test_the_page_follows_a_run_while_it_trains(ui, root):
    live = root / "live"
    live.mkdir()
    alpha = root / "alpha"
    (live / "recipe.yaml").write_text((alpha / "recipe.yaml").read_text())  # max_steps 4
    (live / "meta.json").write_text((alpha / "meta.json").read_text())
    rows = [json.loads(line) for line in (alpha / "curve.jsonl").read_text().splitlines()]
    for row in rows[:2]:  # what training has appended so far
        append_curve(live, row)
    with browser_page() as (page, errors):
        page.goto(ui)
        page.wait_for_selector('#runs li[data-run="live"]')
        assert "step 2 of 4 (training)" in page.inner_text('#runs li[data-run="live"]')
        page.click('#runs li[data-run="live"] a.open')
        page.wait_for_function("() => document.getElementById('run-status').textContent.includes('step 2 of 4')")
        _plot_width(page, "loss")
        first = page.get_attribute('img[data-key="loss"]', "src")
        for row in rows[2:]:  # two more steps land on disk
            append_curve(live, row)
        page.wait_for_function("() => document.getElementById('run-status').textContent.includes('step 4 of 4')",
                               timeout=15_000)
        _plot_width(page, "loss")
        assert page.get_attribute('img[data-key="loss"]', "src") != first  # the plot was fetched again
        (live / "metrics.json").write_text((alpha / "metrics.json").read_text())  # training finished
        page.wait_for_function("() => document.getElementById('run-status').textContent.includes('finished')",
                               timeout=15_000)
        page.wait_for_selector("#eval-table")
    assert not errors, errors


def test_binds_to_localhost_and_refuses_a_missing_folder(ui, tmp_path):
    assert ui.startswith("http://127.0.0.1:")
    done = subprocess.run([sys.executable, "-m", "peftkit", "ui", "--runs", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "not a folder" in done.stderr and "Traceback" not in done.stderr


def test_the_chat_box_answers_with_the_chosen_adapter(root):
    """--chat: peftkit serve's pool behind the page; the answer shown equals the API's greedy answer."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "peftkit", "ui", "--runs", str(root), "--port", str(port),
                             "--chat", str(root / "alpha"), str(root / "beta")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(url + "health", timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
                time.sleep(0.3)
        request = urllib.request.Request(url + "v1/chat/completions", headers={"Content-Type": "application/json"},
                                         data=json.dumps({"model": "beta", "temperature": 0, "max_tokens": 64,
                                                          "messages": [{"role": "user", "content": "add 2 and 3"}]
                                                          }).encode())
        expected = json.loads(urllib.request.urlopen(request, timeout=60).read())["choices"][0]["message"]["content"]
        with browser_page() as (page, errors):
            page.goto(url)
            page.wait_for_selector("#chat:not([hidden])")
            assert page.eval_on_selector_all("#chat-model option", "os => os.map(o => o.value)") == [
                "base", "alpha", "beta"]
            page.select_option("#chat-model", "beta")
            page.fill("#chat-input", "add 2 and 3")
            page.click("#chat-send")
            page.wait_for_selector("#chat-log p.answer", timeout=60_000)
            shown = page.inner_text("#chat-log p.answer")
            assert " ".join(shown.split()) == " ".join(f"beta: {expected}".split())
        assert not errors, errors
    finally:
        proc.terminate()
        proc.wait(30)
