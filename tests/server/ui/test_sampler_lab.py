"""The sampler lab page (grokd/server/ui/static, served by grokd.server.routes.ui) in a real
headless Chromium (Debian's /usr/bin/chromium, driven by Playwright for Python) against real
grokd servers on 127.0.0.1 that share one loaded SmolLM2 engine: one without keys, one with.
The engine also has a plugin sampler registered, which the page must discover from
GET /v1/samplers and offer as a control."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest
import torch

from grokd.engine.logits_processors import LogitsProcessor, SamplerParam, sampler
from grokd.server.app import create_app
from grokd.server.config import ServerConfig, load_config
from grokd.server.state import ServerState
from tests.server.serving import LiveServer, serve_state, wait_ready

CHROMIUM = Path("/usr/bin/chromium")
KEY = "sk-lab-key-0000000000"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
          "required": ["city", "population"], "additionalProperties": False}

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=(
    "the sampler lab browser tests need Debian's Chromium at /usr/bin/chromium "
    "(`apt-get install chromium`; `make test` installs it where it runs as root)"))


@sampler("suppress")
class Suppress(LogitsProcessor):
    """A researcher's plugin: lowers one token's logit by ``strength``."""

    params = (SamplerParam("token_id", "integer", -1, -1, None, description="token to push down; -1 = none"),
              SamplerParam("strength", "number", 0.0, 0.0, 100.0))

    def apply(self, logits: torch.Tensor, rows: list) -> torch.Tensor:
        for i, r in enumerate(rows):
            p = r.params.extra["suppress"]
            if int(p.get("token_id", -1)) >= 0:
                logits[i, int(p["token_id"])] -= float(p.get("strength", 0.0))
        return logits


def _config(**kw: object) -> ServerConfig:
    return ServerConfig(dtype="float32", max_model_len=1024, **kw)


@pytest.fixture(scope="module")
def engine(smollm2_gguf):
    from grokd.engine.async_engine import AsyncEngine
    from grokd.engine.llm_engine import LLMEngine

    config = _config().engine_config()
    eng = AsyncEngine(config, engine=LLMEngine.from_config(config, extra_samplers=[Suppress]))
    eng.start()
    yield eng
    eng.shutdown()


def _serve(engine, config: ServerConfig) -> Iterator[LiveServer]:
    live = serve_state(ServerState.build(config, engine, manage_engine=False))
    wait_ready(live.url, 120)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def server(engine) -> Iterator[LiveServer]:
    yield from _serve(engine, _config())


@pytest.fixture(scope="module")
def keyed(engine) -> Iterator[LiveServer]:
    yield from _serve(engine, _config(api_key=[KEY]))


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server: LiveServer):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(server.url + "/")
    pg.wait_for_selector("body[data-ready=true]", timeout=15_000)
    yield pg
    context.close()
    assert not errors, errors


def _send(pg, prompt: str) -> object:
    """Send ``prompt`` in the chat view; returns the assistant message's element handle once done."""
    pg.fill("#prompt", prompt)
    pg.click("#send")
    last = pg.locator(".msg.assistant .body").last
    last.wait_for()
    pg.wait_for_function("() => { const b = [...document.querySelectorAll('.msg.assistant .body')].pop();"
                         " return b && b.dataset.state !== 'streaming'; }", timeout=60_000)
    assert last.get_attribute("data-state") == "done", pg.text_content("#error")
    return last


# ---------------------------------------------------------------------------- serving the page
def test_the_page_is_served_at_root_without_a_key_and_never_holds_one(keyed: LiveServer) -> None:
    r = httpx.get(keyed.url + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert '<script type="module" src="/ui/lab.js">' in r.text and KEY not in r.text
    js = httpx.get(keyed.url + "/ui/lab.js")
    assert js.status_code == 200 and "sessionStorage" in js.text and "localStorage.setItem" not in js.text
    assert httpx.get(keyed.url + "/v1/samplers").status_code == 401  # the API itself still needs the key


def test_no_ui_turns_the_page_off(engine) -> None:
    assert load_config(cli={"ui": False}, env={}).ui is False and load_config(env={}).ui is True
    from fastapi.testclient import TestClient

    app = create_app(ServerState.build(_config(ui=False), engine, manage_engine=False), enable_jobs=False)
    with TestClient(app) as client:
        assert client.get("/").status_code == 404 and client.get("/ui/lab.js").status_code == 404
        assert client.get("/v1/models").status_code == 200


def test_samplers_endpoint_describes_every_registered_processor(server: LiveServer) -> None:
    body = httpx.get(server.base_url + "/samplers").json()
    by_name = {s["name"]: s for s in body["data"]}
    assert body["default_order"][:2] == ["penalties", "logit_bias"] and body["processed_logprobs"] is True
    assert set(body["default_order"]) <= set(by_name) and "suppress" in by_name
    temp = by_name["temperature"]["params"][0]
    assert (temp["name"], temp["type"], temp["minimum"], temp["maximum"], temp["default"]) == ("temperature", "number", 0.0, 2.0, 1.0)
    assert {p["name"] for p in by_name["penalties"]["params"]} == {"repetition_penalty", "frequency_penalty", "presence_penalty"}
    plugin = by_name["suppress"]
    assert plugin["builtin"] is False and plugin["in_default_order"] is False
    assert [p["name"] for p in plugin["params"]] == ["token_id", "strength"]
    assert plugin["description"].startswith("A researcher's plugin")


def test_processed_logprobs_report_the_distribution_after_the_samplers(server: LiveServer) -> None:
    body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4, "seed": 3,
            "top_k": 2, "logprobs": True, "top_logprobs": 5, "processed_logprobs": True}
    r = httpx.post(server.base_url + "/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    for entry in r.json()["choices"][0]["logprobs"]["content"]:
        assert len(entry["top_logprobs"]) == 5
        after = entry["processed_top_logprobs"]
        assert 1 <= len(after) <= 2  # top_k=2 removed the rest
        assert math.isclose(sum(math.exp(t["logprob"]) for t in after), 1.0, rel_tol=1e-4)
        assert entry["processed_logprob"] >= entry["logprob"]  # renormalised over fewer tokens
    plain = httpx.post(server.base_url + "/chat/completions", json={**body, "processed_logprobs": False}, timeout=60)
    assert "processed_top_logprobs" not in plain.json()["choices"][0]["logprobs"]["content"][0]


# ---------------------------------------------------------------------------- in the browser
def test_the_page_says_the_model_is_loading_and_retries_until_it_is_ready(browser, engine) -> None:
    release = threading.Event()

    def loader():
        release.wait(60)
        return engine

    state = ServerState.loading(_config(), loader)
    state.manage_engine = False  # the module's engine outlives this server
    live = serve_state(state)
    context = browser.new_context()
    try:
        pg = context.new_page()
        pg.goto(live.url + "/")  # the page and its assets are served while the model loads
        pg.wait_for_function("() => document.getElementById('error').textContent.includes('loading')", timeout=10_000)
        assert pg.get_attribute("body", "data-ready") is None
        release.set()
        pg.wait_for_selector("body[data-ready=true]", timeout=20_000)
        assert pg.locator("#error").is_hidden() and pg.locator("#model option").count() == 1
    finally:
        release.set()
        context.close()
        live.stop()


def test_a_prompt_streams_text_with_usage_timings_code_and_metrics(page) -> None:
    page.fill("#prompt", "Write one sentence about the sea.")
    page.fill("#max_tokens", "40")
    page.click("#send")
    # text arrives while the run is still streaming
    page.wait_for_function("() => { const b = document.querySelector('.msg.assistant .body');"
                           " return b && b.dataset.state === 'streaming' && b.textContent.length > 0; }",
                           timeout=30_000, polling=10)
    page.wait_for_selector(".msg.assistant .body[data-state=done]", timeout=60_000)
    out = page.locator(".msg.assistant .body")
    assert len(out.get_attribute("data-text")) > 0 and int(out.get_attribute("data-chunks")) > 3
    assert page.locator(".msg.assistant .tok").count() >= 3
    completion = int(page.text_content('[data-stat="completion tokens"]'))
    assert 3 <= completion <= 40
    assert page.text_content('[data-stat="time to first token"]').endswith("ms")
    assert float(page.text_content('[data-stat="tokens/s"]')) > 0
    code = page.text_content("#code")
    assert code.startswith("curl -N http://127.0.0.1:") and '"max_tokens": 40' in code and "$GROKD_API_KEY" in code
    # the snippets run as shown: curl and openai-python against this server; xai-sdk (gRPC) compiles
    curl = subprocess.run(["bash", "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "GROKD_API_KEY": "none"})
    assert curl.returncode == 0 and "data: [DONE]" in curl.stdout, curl.stderr
    page.click('#code-tabs [data-lang="openai"]')
    openai_code = page.text_content("#code")
    assert "client.chat.completions.create(" in openai_code
    ran = subprocess.run([sys.executable, "-c", openai_code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "GROKD_API_KEY": "none"})
    assert ran.returncode == 0 and ran.stdout.strip(), ran.stderr
    page.click('#code-tabs [data-lang="xai"]')
    xai_code = page.text_content("#code")
    assert "client.chat.create(" in xai_code and "max_tokens=40," in xai_code
    compile(xai_code, "xai_snippet", "exec")
    page.wait_for_function("() => document.getElementById('m-kv').textContent.endsWith('%')", timeout=10_000)
    assert page.text_content("#m-running").isdigit() and page.text_content("#m-waiting").isdigit()


def test_temperature_seed_and_plugin_controls_go_into_the_request(page) -> None:
    assert page.locator("#x-suppress-strength").count() == 1  # the plugin's control, built from /v1/samplers
    page.fill("#p-temperature", "0.7")
    page.fill("#seed", "1234")
    page.fill("#p-top_k", "20")
    page.fill("#x-suppress-token_id", "42")
    page.fill("#x-suppress-strength", "5")
    with page.expect_request(lambda r: r.url.endswith("/v1/chat/completions")) as req:
        _send(page, "Hello")
    sent = json.loads(req.value.post_data)
    assert sent["temperature"] == 0.7 and sent["seed"] == 1234 and sent["top_k"] == 20
    assert sent["suppress"] == {"token_id": 42, "strength": 5}
    assert "top_p" not in sent and "min_p" not in sent  # left at their defaults: not sent
    page.click('#code-tabs [data-lang="openai"]')
    code = page.text_content("#code")
    assert "temperature=0.7," in code and "seed=1234," in code and '"suppress": {' in code and "extra_body=" in code


def test_token_view_shows_alternatives_before_and_after_the_samplers(page) -> None:
    page.fill("#p-top_k", "3")
    page.fill("#top_logprobs", "5")
    _send(page, "List some fruits.")
    tokens = page.locator(".msg.assistant .tok")
    assert tokens.count() >= 3
    for i in (0, 1, 2):
        tokens.nth(i).hover()
        pop = page.locator("#tok-popover")
        pop.wait_for(state="visible")
        assert pop.get_attribute("data-index") == str(i)
        raw = [float(x) for x in pop.locator('table[data-kind="raw"] tr[data-p]').evaluate_all("rs => rs.map(r => r.dataset.p)")]
        after = [float(x) for x in pop.locator('table[data-kind="processed"] tr[data-p]').evaluate_all("rs => rs.map(r => r.dataset.p)")]
        assert len(raw) == 5 and 0 < sum(raw) <= 1 + 1e-6 and raw == sorted(raw, reverse=True)
        assert 1 <= len(after) <= 3 and 0 < sum(after) <= 1 + 1e-6
        assert math.isclose(sum(after), 1.0, rel_tol=1e-3)  # top_k=3 kept these and nothing else
        chosen = pop.locator('table[data-kind="processed"] tr.chosen')
        assert chosen.count() == 1  # the sampled token is among what the samplers kept
    # the colours follow the chosen distribution: top_k=3 renormalised, so some token's colour changes
    styles = tokens.evaluate_all("ts => ts.map(t => t.getAttribute('style'))")
    page.select_option("#colour-by", "processed")
    assert tokens.evaluate_all("ts => ts.map(t => t.getAttribute('style'))") != styles


def test_compare_streams_two_columns_and_marks_the_first_divergent_token(page) -> None:
    page.click("#tab-compare")
    assert page.locator("#view-compare").is_visible() and not page.locator("#view-chat").is_visible()
    cols = page.locator(".column")
    assert cols.count() == 2
    cols.nth(0).locator("textarea").fill('{"temperature": 0}')
    cols.nth(1).locator("textarea").fill('{"temperature": 2.0}')
    page.fill("#max_tokens", "24")
    page.fill("#prompt", "Tell me a story about a fox.")
    with page.expect_request(lambda r: r.url.endswith("/v1/chat/completions")) as first:
        page.click("#compare-run")
    page.wait_for_function("() => [...document.querySelectorAll('.column .output')].every(o => o.dataset.state === 'done')",
                           timeout=60_000)
    assert json.loads(first.value.post_data)["seed"] == 1
    at = int(page.get_attribute("#divergence", "data-index"))
    assert at >= 0 and f"token {at + 1}" in page.text_content("#divergence")
    seqs = [cols.nth(i).locator(".tok").evaluate_all("ts => ts.map(t => t.textContent)") for i in (0, 1)]
    assert seqs[0][:at] == seqs[1][:at]
    assert at >= min(map(len, seqs)) or seqs[0][at] != seqs[1][at]
    for i in (0, 1):
        marked = cols.nth(i).locator(".tok.diverge")
        if at < len(seqs[i]):
            assert marked.count() == 1 and marked.get_attribute("data-index") == str(at)


def test_a_schema_constrained_run_yields_json_that_validates(page) -> None:
    page.select_option("#response_format", "json_schema")
    page.fill("#schema", json.dumps(SCHEMA))
    page.fill("#max_tokens", "100")
    with page.expect_request(lambda r: r.url.endswith("/v1/chat/completions")) as req:
        out = _send(page, "Give a city and its population as JSON.")
    assert json.loads(req.value.post_data)["response_format"]["json_schema"]["schema"] == SCHEMA
    text = out.get_attribute("data-text")
    jsonschema.validate(json.loads(text), SCHEMA)


def test_tool_definitions_give_a_constrained_tool_call(page) -> None:
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    page.fill("#tools", json.dumps([tool]))
    page.select_option("#tool_choice", "required")
    page.fill("#max_tokens", "60")
    with page.expect_request(lambda r: r.url.endswith("/v1/chat/completions")) as req:
        _send(page, "What is the weather in Paris?")
    sent = json.loads(req.value.post_data)
    assert sent["tools"] == [tool] and sent["tool_choice"] == "required"
    calls = json.loads(page.locator(".msg.assistant .tool-calls").text_content())
    assert calls and {c["name"] for c in calls} == {"get_weather"}  # parallel calls are allowed
    assert all(isinstance(json.loads(c["arguments"])["city"], str) for c in calls)
    assert page.text_content('[data-stat="finish"]') == "tool_calls"
    assert page.locator(".msg.assistant .tok").count() > 3  # the constrained tokens, with their alternatives


def test_phone_width_and_keyboard_use(browser, server: LiveServer) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    pg = context.new_page()
    pg.goto(server.url + "/")
    pg.wait_for_selector("body[data-ready=true]")
    assert pg.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than the phone
    for el in ("#prompt", "#model", "#p-temperature", "#seed", "#system"):  # every control has a label
        assert pg.locator(el).evaluate("e => e.labels.length > 0 || !!e.closest('label')"), el
    pg.focus("#prompt")
    pg.keyboard.press("Control+a")
    pg.keyboard.type("Say hello.")
    pg.keyboard.press("Control+Enter")  # sends from the keyboard
    pg.wait_for_selector(".msg.assistant .body[data-state=done]", timeout=60_000)
    pg.locator(".msg.assistant .tok").first.focus()  # tokens are focusable: the popover follows focus
    assert pg.locator("#tok-popover").is_visible()
    pg.keyboard.press("Escape")
    assert not pg.locator("#tok-popover").is_visible()
    pg.focus("#tab-chat")
    pg.keyboard.press("ArrowRight")  # tabs follow the ARIA keyboard pattern
    assert pg.evaluate("document.activeElement.id") == "tab-compare"
    assert pg.get_attribute("#tab-compare", "aria-selected") == "true" and pg.locator("#view-compare").is_visible()
    context.close()


def test_a_wrong_key_shows_the_servers_error_and_the_key_stays_in_session_storage(browser, keyed: LiveServer) -> None:
    context = browser.new_context()
    pg = context.new_page()
    pg.goto(keyed.url + "/")
    pg.locator("#key-dialog").wait_for(state="visible")  # /v1/models answered 401: the page asks for a key
    pg.fill("#api-key", "sk-wrong-0000000000")
    pg.click("#key-save")
    expected = httpx.get(keyed.base_url + "/models", headers={"Authorization": "Bearer sk-wrong-0000000000"})
    assert expected.status_code == 401
    message = expected.json()["error"]["message"]
    pg.wait_for_function("m => document.getElementById('error').textContent.includes(m)", arg=message, timeout=10_000)
    assert pg.text_content("#error").startswith("401")
    pg.fill("#api-key", KEY)
    pg.click("#key-save")
    pg.wait_for_selector("body[data-ready=true]", timeout=15_000)
    assert pg.locator("#error").is_hidden()
    assert pg.evaluate("sessionStorage.getItem('grokd-lab-api-key')") == KEY
    pg.fill("#max_tokens", "8")
    with pg.expect_request(lambda r: r.url.endswith("/v1/chat/completions")) as req:
        _send(pg, "Hi")
    assert req.value.headers["authorization"] == f"Bearer {KEY}"  # sent as a header, from session storage
    assert pg.evaluate("localStorage.length") == 0 and pg.evaluate("document.cookie") == ""
    code = pg.text_content("#code")
    assert KEY not in pg.content() and KEY not in code and "$GROKD_API_KEY" in code
    curl = subprocess.run(["bash", "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "GROKD_API_KEY": KEY})
    assert "data: [DONE]" in curl.stdout, curl.stdout + curl.stderr
    context.close()
