"""t3unlearn serve in front of users: a request can only fail itself, a long prompt costs only its own
request, keys guard the API and head management, --lock-guidance and --no-base hold, /metrics parses,
request ids, 429, timeouts, CORS and no internals in any response.

In process: uvicorn in a thread over an untrained tiny Llama (``random_lm``) with two heads that visibly
tilt; the client is the official ``openai`` package (raw HTTP where the test is about headers).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from test_serve import _free_socket, served  # a free loopback port; an app served on one (shared with the serve tests)

openai = pytest.importorskip("openai", reason="the serve tests use the openai package as the client (pip install -e .[test])")
pytest.importorskip("fastapi", reason="t3unlearn serve needs fastapi and uvicorn")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

API_KEY, ADMIN_KEY = "test-api-key-0123456789", "test-admin-key-9876543210"
PROMPT = "Question: Where was Ilse Varga born?\nAnswer:"

# The hostile requests of issue #32 and their kin, each with what is wrong. docs/serve.md ("Hostile requests")
# lists the same names; test_the_docs_list_the_hostile_requests checks that the two lists are one.
HOSTILE = [  # (name, fields of a completions request to head h1, the param the error names)
    ("temperature 1e-300", {"temperature": 1e-300}, "temperature"),
    ("temperature 1e-45", {"temperature": 1e-45}, "temperature"),
    ("t3.scale 1e300", {"t3": {"scale": 1e300}}, "t3.scale"),
    ("t3.scale -1e300", {"t3": {"scale": -1e300}}, "t3.scale"),
    ("t3.bias -1e300", {"t3": {"bias": -1e300}}, "t3.bias"),
    ("t3.bias 1e300", {"t3": {"bias": 1e300}}, "t3.bias"),
    ("t3.temperature 1e-300", {"t3": {"temperature": 1e-300}}, "t3.temperature"),
    ("t3.temperature 1e300", {"t3": {"temperature": 1e300}}, "t3.temperature"),
    ("t3.tail_logp -1e300", {"t3": {"tail_logp": -1e300}}, "t3.tail_logp"),
    ("t3.floor -1e300", {"t3": {"floor": -1e300}}, "t3.floor"),
    ("t3.support on a head without a support gate", {"t3": {"support": 0.9}}, "t3.support"),
    ("t3.piece_floor on a head without a word-piece table", {"t3": {"piece_floor": 10.0}}, "t3.piece_floor"),
    ("t3.spelling on a head without a word-piece table", {"t3": {"spelling": "base"}}, "t3.spelling"),
    ("top_p 1e-300 with temperature 2", {"top_p": 1e-300, "temperature": 2.0}, None),  # numerically safe: served
    ("seed 2**70", {"seed": 2**70, "temperature": 1.0}, None),  # served
    ("seed -1", {"seed": -1, "temperature": 1.0}, None),  # served
]


@pytest.fixture(scope="module")
def lm(random_lm, tmp_path_factory):
    """(base, tokenizer, {name: head dir}): heads h1 (T=2.5, s=1) and h2 (T=1.5, s=2) with tilting weights."""
    from t3unlearn.t3.head import GuidanceHead
    from t3unlearn.t3.model import T3Config, T3ForCausalLM, tokenizer_hash

    base, tok = random_lm
    root = tmp_path_factory.mktemp("secure-heads")
    heads = {}
    for name, seed, T, s in (("h1", 1, 2.5, 1.0), ("h2", 2, 1.5, 2.0)):
        torch.manual_seed(seed)
        head = GuidanceHead(base.config.hidden_size, 8, base.config.vocab_size)
        torch.nn.init.normal_(head.out.weight, std=2.0)
        cfg = T3Config(t3_temperature=T, t3_scale=s, tokenizer_hash=tokenizer_hash(tok))
        T3ForCausalLM(cfg, copy.deepcopy(base), head).save_pretrained(root / name)
        heads[name] = str(root / name)
    return base, tok, heads


@contextlib.contextmanager
def serving(lm, *, start=True, **kw):
    """A live server over ``lm`` built with ``build(**kw)``: yields (url, state)."""
    from t3unlearn.serve.app import build

    base, tok, heads = lm
    app, state = build(copy.deepcopy(base), tok, base_id="base", heads=dict(heads), max_batch=16, start=start, **kw)
    try:
        with served(app) as url:
            yield url, state
    finally:
        state.engine.close()


def _client(url, key="none", **kw):
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120, **kw)


def _http(url, path, body=None, *, method=None, headers=None, timeout=60):
    """(status, headers, parsed JSON or text) of a raw request."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method or ("POST" if data is not None else "GET"),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, hdrs, raw = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, hdrs, raw = e.code, e.headers, e.read()
    try:
        return status, hdrs, json.loads(raw)
    except ValueError:
        return status, hdrs, raw.decode()


def _greedy(client, model, n=24):
    r = client.completions.create(model=model, prompt=PROMPT, max_tokens=n, temperature=0, extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == n
    return r.choices[0].text


# --------------------------------------------------------------------------- isolation


def test_hostile_requests_are_refused_or_served_and_others_go_on(lm):
    """Each hostile value of issue #32 gets a 4xx naming its field (or, where it is numerically safe, is served),
    while streams of other clients, to the base and to a head, decode alongside and end with the text they
    have alone."""
    with serving(lm) as (url, _state):
        client = _client(url)
        alone = {m: _greedy(client, m, 48) for m in ("base", "h1")}

        def stream(model):
            chunks = client.completions.create(model=model, prompt=PROMPT, max_tokens=48, temperature=0, stream=True,
                                               extra_body={"ignore_eos": True})
            return "".join(c.choices[0].text for c in chunks if c.choices)

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            others = {m: pool.submit(stream, m) for m in ("base", "h1")}
            for name, fields, param in HOSTILE:
                body = {"model": "h1", "prompt": PROMPT, "max_tokens": 8} | fields
                status, _h, out = _http(url, "/v1/completions", body)
                if param is None:
                    assert status == 200 and out["usage"]["completion_tokens"] >= 1, (name, out)
                else:
                    assert status == 400 and out["error"]["param"] == param and out["error"]["message"], (name, out)
            assert {m: f.result() for m, f in others.items()} == alone


def test_a_sequence_that_goes_non_finite_fails_alone(lm):
    """Past validation (a head saved with absurd guidance, a bug): the engine fails that row only; the
    rows decoded with it, base and head, finish with the tokens they get alone."""
    from t3unlearn.serve.engine import Engine, Sequence, wait_idle
    from t3unlearn.serve.heads import HeadRegistry
    from t3unlearn.t3.model import tokenizer_hash

    base, tok, heads = lm
    registry = HeadRegistry("base", hidden_size=base.config.hidden_size, vocab_size=base.config.vocab_size,
                            tokenizer_hash=tokenizer_hash(tok))
    h1 = registry.add("h1", heads["h1"])
    g = h1.guidance
    poison = [  # (what, head, guidance, sampling temperatures)
        ("scale 1e300", h1, g.replace(scale=1e300), (0.0, 1.0)),
        ("scale 1e38, bias -1000", h1, g.replace(scale=1e38, bias=-1000.0), (0.0, 1.0)),  # float32: every token -inf
        ("bias -1e300", h1, g.replace(bias=-1e300), (0.0, 1.0)),
        ("T 1e-300", h1, g.replace(temperature=1e-300, tempering="global"), (0.0, 1.0)),
        ("sampling temperature 1e-45", None, None, (1e-45,)),
    ]
    engine = Engine(copy.deepcopy(base), tok, max_batch=8).start()
    try:
        ids = list(tok(PROMPT)["input_ids"])

        def run(seqs):
            engine.submit(seqs)
            assert wait_idle(engine, 60)
            return [(s.finish_reason, s.out_ids) for s in seqs]

        good = lambda: [Sequence(ids, None, None, max_tokens=12, sampling_temperature=0.0, ignore_eos=True),  # noqa: E731
                        Sequence(ids, h1, None, max_tokens=12, sampling_temperature=0.0, ignore_eos=True),
                        Sequence(ids, None, None, max_tokens=12, sampling_temperature=0.8, seed=3, ignore_eos=True)]
        alone = run(good())
        for what, head, guidance, temps in poison:
            for temp in temps:  # greedy and sampled
                bad = Sequence(ids, head, guidance, max_tokens=12, sampling_temperature=temp, seed=1, request_id="poison")
                together = run([bad] + good())
                assert bad.finish_reason == "error" and bad.error_code == "generation_failed", what
                assert "inf" not in bad.error and "Error" not in bad.error  # a message for the client, no internals
                assert together[1:] == alone, what
    finally:
        engine.close()


def test_a_long_prompt_does_not_hold_up_health(lm):
    """A 900 KB prompt (under the body limit) is tokenized off the event loop: while it is, /health answers
    in well under 100 ms; the prompt itself is refused (over the context)."""
    with serving(lm, max_body=1 << 20) as (url, _state):
        _http(url, "/health")
        prompt = ("Question: Where was Ilse Varga born? " * 24_000)[:900_000]
        result = {}

        def big():
            t = time.perf_counter()
            result["status"], _h, result["body"] = _http(url, "/v1/completions", {"model": "base", "prompt": prompt, "max_tokens": 1})
            result["took"] = time.perf_counter() - t

        thread = threading.Thread(target=big)
        thread.start()
        time.sleep(0.15)  # the body is sent and parsed; tokenizing has begun
        waits = []
        while thread.is_alive():
            t = time.perf_counter()
            status, _h, _b = _http(url, "/health")
            if thread.is_alive():  # only polls that ended while the big request was still in flight count
                waits.append(time.perf_counter() - t)
            assert status == 200
            time.sleep(0.02)
        thread.join()
        assert result["status"] == 400 and result["body"]["error"]["code"] == "context_length_exceeded"
        assert len(waits) >= 3, f"the big request took {result['took']:.2f} s: too short to measure /health during it"
        # every poll but the slowest (one scheduling hiccup on a loaded machine) within 100 ms; tokenized on the
        # loop, every poll would wait for the whole tokenizing (over a second here) and none would count
        assert sorted(waits)[-2] < 0.1, (len(waits), sorted(waits)[-5:], result["took"])


# --------------------------------------------------------------------------- access control


def test_api_key_guards_every_v1_route(lm, monkeypatch):
    from t3unlearn.serve.security import API_KEY_ENV, Security

    monkeypatch.setenv(API_KEY_ENV, API_KEY)
    security = Security.from_env()  # the key from the environment, as the CLI reads it
    assert security.api_key == API_KEY and security.admin_key is None
    with serving(lm, security=security) as (url, _state):
        for key in ("none", API_KEY[:-1] + "x", API_KEY + "x", API_KEY[:8]):
            with pytest.raises(openai.AuthenticationError) as e:
                _client(url, key).models.list()
            assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
        for path, body in (("/v1/models", None), ("/v1/models/h1", None), ("/v1/completions", {"model": "h1", "prompt": "x"}),
                           ("/v1/chat/completions", {"model": "h1", "messages": [{"role": "user", "content": "x"}]})):
            status, headers, out = _http(url, path, body)
            assert status == 401 and headers["WWW-Authenticate"] == "Bearer" and "Authorization: Bearer" in out["error"]["message"]
            status, *_ = _http(url, path, body, headers={"Authorization": "Basic " + API_KEY})
            assert status == 401
        good = _client(url, API_KEY)
        assert {m.id for m in good.models.list().data} == {"base", "h1", "h2"}
        assert good.chat.completions.create(model="h1", messages=[{"role": "user", "content": "Who?"}], max_tokens=3).choices
        # open: health, metrics, the playground (it asks for the key)
        for path in ("/health", "/metrics", "/"):
            assert _http(url, path)[0] == 200
        # head management is off without an admin key, whatever the key
        status, _h, out = _http(url, "/v1/heads", {"name": "x", "path": "/etc"}, headers={"Authorization": f"Bearer {API_KEY}"})
        assert status == 403 and out["error"]["code"] == "admin_disabled" and "--admin-key" in out["error"]["message"]
        status, _h, out = _http(url, "/v1/heads/h1", method="DELETE", headers={"Authorization": f"Bearer {API_KEY}"})
        assert status == 403 and {m.id for m in good.models.list().data} == {"base", "h1", "h2"}


def test_admin_key_alone_manages_heads(lm):
    from t3unlearn.serve.security import Security

    with serving(lm, security=Security(api_key=API_KEY, admin_key=ADMIN_KEY)) as (url, _state):
        user, admin = _client(url, API_KEY), _client(url, ADMIN_KEY)
        _base, _tok, heads = lm
        body = {"name": "h1-off", "path": heads["h1"], "scale": 0.0}
        with pytest.raises(openai.PermissionDeniedError) as e:  # a user's key: 403
            user.post("/heads", cast_to=object, body=body)
        assert e.value.body["code"] == "admin_key_required"
        with pytest.raises(openai.AuthenticationError):  # no key or a wrong one: 401
            _client(url, "wrong").post("/heads", cast_to=object, body=body)
        with pytest.raises(openai.PermissionDeniedError):
            user.delete("/heads/h1", cast_to=object)
        assert "h1" in {m.id for m in user.models.list().data}
        # the admin: add, delete; no server path in the answers, even in the errors
        card = admin.post("/heads", cast_to=object, body={"name": "h3", "path": heads["h2"]})
        assert card["id"] == "h3" and str(Path(heads["h2"]).parent) not in json.dumps(card)
        with pytest.raises(openai.BadRequestError) as e:
            admin.post("/heads", cast_to=object, body={"name": "h4", "path": str(Path(heads["h2"]).parent / "nowhere")})
        assert "not a directory" in e.value.body["message"] and str(Path(heads["h2"]).parent) not in e.value.body["message"]
        assert admin.delete("/heads/h3", cast_to=object)["deleted"] is True
        assert _greedy(admin, "h2", 4)  # the admin key is also an API key


def test_lock_guidance_refuses_t3_and_serves_the_saved_guidance(lm):
    from t3unlearn.serve.security import Security

    with serving(lm, security=Security(lock_guidance=True)) as (url, _state):
        client = _client(url)
        for t3 in ({"scale": 0}, {"temperature": 1, "scale": 0}, {}):
            with pytest.raises(openai.PermissionDeniedError) as e:
                client.completions.create(model="h1", prompt=PROMPT, max_tokens=4, extra_body={"t3": t3})
            assert e.value.body["param"] == "t3" and e.value.body["code"] == "guidance_locked"
        r = client.completions.create(model="h1", prompt=PROMPT, max_tokens=4, temperature=0)
        assert (r.model_extra["t3"]["temperature"], r.model_extra["t3"]["scale"]) == (2.5, 1.0)
        card = client.models.retrieve("h1")
        assert card.model_extra["t3"]["adjustable"] is False  # the playground reads it and sends no t3


def test_no_base_hides_the_base(lm):
    from t3unlearn.serve.security import Security

    with serving(lm, security=Security(no_base=True)) as (url, _state):
        client = _client(url)
        assert {m.id for m in client.models.list().data} == {"h1", "h2"}
        for call in (lambda: client.completions.create(model="base", prompt=PROMPT, max_tokens=2),
                     lambda: client.chat.completions.create(model="base", messages=[{"role": "user", "content": "x"}]),
                     lambda: client.models.retrieve("base")):
            with pytest.raises(openai.NotFoundError) as e:
                call()
            assert e.value.body["code"] == "model_not_found" and "'base'" in e.value.body["message"]
            assert "h1" in e.value.body["message"]
        assert _http(url, "/health")[2]["model"] is None
        assert _greedy(client, "h1", 4)


# --------------------------------------------------------------------------- operations


def test_metrics_parse_as_prometheus_text(lm):
    from prometheus_client.parser import text_string_to_metric_families

    with serving(lm) as (url, _state):
        client = _client(url)
        _greedy(client, "h1", 5)
        list(client.completions.create(model="base", prompt=PROMPT, max_tokens=3, stream=True))
        with pytest.raises(openai.NotFoundError):
            client.completions.create(model="no-such-model", prompt=PROMPT)
        status, headers, text = _http(url, "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(text)}
        samples = lambda name: [s for f in families.values() for s in f.samples if s.name == name]  # noqa: E731
        done = {(s.labels["route"], s.labels["model"], s.labels["status"]): s.value for s in samples("t3unlearn_requests_total")}
        assert done[("/v1/completions", "h1", "200")] == 1 and done[("/v1/completions", "base", "200")] == 1
        assert done[("/v1/completions", "-", "404")] == 1  # an unknown name is not a label value
        tokens = {s.labels["model"]: s.value for s in samples("t3unlearn_generation_tokens_total")}
        assert tokens == {"h1": 5.0, "base": 3.0}
        ttft = {s.labels["model"]: s.value for s in samples("t3unlearn_time_to_first_token_seconds_count")}
        assert ttft == {"h1": 1.0, "base": 1.0}
        assert any(s.labels.get("route") == "/v1/completions" for s in samples("t3unlearn_request_duration_seconds_bucket"))
        assert samples("t3unlearn_queue_length")[0].value == 0 and samples("t3unlearn_running_sequences")


def test_request_ids_are_echoed_and_logged(lm, caplog):
    with serving(lm) as (url, _state):
        status, headers, _ = _http(url, "/v1/models", headers={"X-Request-Id": "trace-42"})
        assert status == 200 and headers["X-Request-Id"] == "trace-42"
        status, headers, _ = _http(url, "/health", headers={"X-Request-Id": "bad id\twith spaces"})
        made = headers["X-Request-Id"]
        assert len(made) == 32 and made != "bad id\twith spaces"
        # an internal error: 500 that says nothing of it but the request id, which the log line carries
        gen = _state.engine

        def broken(*a, **kw):
            raise RuntimeError("secret detail at /srv/models/private")

        gen.submit, saved = broken, gen.submit
        try:
            with caplog.at_level(logging.ERROR, logger="t3unlearn.serve"):
                status, headers, out = _http(url, "/v1/completions", {"model": "h1", "prompt": PROMPT, "max_tokens": 2},
                                             headers={"X-Request-Id": "req-500"})
        finally:
            gen.submit = saved
        assert status == 500 and headers["X-Request-Id"] == "req-500"
        assert "secret" not in json.dumps(out) and "/srv" not in json.dumps(out) and "req-500" in out["error"]["message"]
        assert any("req-500" in r.getMessage() and "secret detail" in (r.exc_text or "") for r in caplog.records)
        assert _greedy(_client(url), "h1", 2)


def test_a_full_queue_answers_429(lm):
    with serving(lm, start=False, max_queue=2) as (url, state):
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(_http, url, "/v1/completions", {"model": "h1", "prompt": PROMPT, "max_tokens": 3, "n": 2})
            end = time.monotonic() + 30
            while state.engine.stats()["waiting"] < 2:  # the engine is not started: the two sequences wait
                assert time.monotonic() < end
                time.sleep(0.01)
            status, headers, out = _http(url, "/v1/completions", {"model": "h1", "prompt": PROMPT, "max_tokens": 3})
            assert status == 429 and out["error"]["code"] == "queue_full" and headers["Retry-After"] == "1"
            assert "--max-queue" in out["error"]["message"]
            state.engine.start()
            assert first.result()[0] == 200


def test_a_request_past_its_timeout_gets_504_and_is_stopped(lm):
    with serving(lm, start=False, request_timeout=0.5) as (url, state):
        t = time.perf_counter()
        status, _h, out = _http(url, "/v1/completions", {"model": "h1", "prompt": PROMPT, "max_tokens": 3})
        assert status == 504 and out["error"]["code"] == "timeout" and 0.5 <= time.perf_counter() - t < 10
        stream = _client(url).completions.create(model="h1", prompt=PROMPT, max_tokens=3, stream=True)
        with pytest.raises(openai.APIError) as e:
            list(stream)
        assert "--request-timeout" in str(e.value)
        waiting = list(state.engine._waiting)
        assert len(waiting) == 2 and all(s.cancelled for s in waiting)  # stopped: they never decode
        state.engine.start()
        from t3unlearn.serve.engine import wait_idle

        assert wait_idle(state.engine, 30) and all(s.finish_reason == "cancelled" for s in waiting)


def test_cors_only_for_the_origins_given(lm):
    with serving(lm, cors_origins=["https://app.example.com"]) as (url, _state):
        pre = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "authorization,content-type"}
        status, headers, _ = _http(url, "/v1/chat/completions", method="OPTIONS", headers=pre)
        assert status == 200 and headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        status, headers, _ = _http(url, "/v1/chat/completions", method="OPTIONS", headers={**pre, "Origin": "https://evil.example"})
        assert status == 400 and "Access-Control-Allow-Origin" not in headers
    with serving(lm) as (url, _state):  # the default: no cross-origin access
        _s, headers, _ = _http(url, "/v1/models", headers={"Origin": "https://app.example.com"})
        assert "Access-Control-Allow-Origin" not in headers


def test_the_docs_list_the_hostile_requests():
    docs = (Path(__file__).parents[1] / "docs" / "serve.md").read_text(encoding="utf-8")
    section = docs.split("### Hostile requests", 1)[1].split("\n#", 1)[0]
    listed = {line.split("|")[1].strip().strip("`") for line in section.splitlines() if line.startswith("| `")}
    assert listed == {name for name, _f, _p in HOSTILE}


def test_the_docs_list_the_guidance_fields_of_v1_models():
    from t3unlearn.serve.heads import guidance_dict
    from t3unlearn.t3.config import Guidance

    docs = (Path(__file__).parents[1] / "docs" / "serve.md").read_text(encoding="utf-8")
    row = next(line for line in docs.splitlines() if line.startswith("| `GET /v1/models` |"))
    assert [f for f in [*guidance_dict(Guidance()), "bytes", "adjustable"] if f"`{f}`" not in row] == []


# --------------------------------------------------------------------------- the playground with a key


def _playground(url, key, head, question):
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        pytest.skip("no Node.js on this machine; the playground's script is driven by tests/js/playground_harness.js")
    js = Path(__file__).parents[1] / "src" / "t3unlearn" / "serve" / "static" / "playground.js"
    proc = subprocess.run([node, str(Path(__file__).parent / "js" / "playground_harness.js"), str(js), url, key, head, question],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def _streamed_chat(client, model, question):
    """The text the playground shows: a greedy chat answer of 8 tokens, streamed (deltas joined)."""
    chunks = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}], max_tokens=8,
                                            temperature=0, seed=0, stream=True)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_the_playground_asks_for_the_key_and_sends_it(lm):
    from t3unlearn.serve.security import Security

    with serving(lm, security=Security(api_key=API_KEY)) as (url, _state):
        out = _playground(url, API_KEY, "h2", "Who?")
        assert out["keyAsked"] and "needs an API key" in out["firstNote"] and "2 heads loaded" in out["note"]
        chats = [s for s in out["sent"] if s["url"] == "/v1/chat/completions"]
        assert {s["body"]["model"] for s in chats} == {"base", "h2"} and {s["auth"] for s in chats} == {f"Bearer {API_KEY}"}
        assert chats[1]["body"]["t3"] == {"temperature": 1.5, "scale": 2, "tempering": "adaptive"}  # h2's saved guidance
        client = _client(url, API_KEY)
        for pane, model in (("base", "base"), ("head", "h2")):
            assert out[pane + "Answer"] == _streamed_chat(client, model, "Who?") and out[pane + "Status"].startswith("done")


def test_the_playground_under_lock_guidance_and_no_base(lm):
    from t3unlearn.serve.security import Security

    with serving(lm, security=Security(lock_guidance=True, no_base=True)) as (url, _state):
        out = _playground(url, "", "h1", "Who?")
        assert not out["keyAsked"] and out["baseId"] == "not served here" and out["knobsDisabled"]
        chats = [s["body"] for s in out["sent"] if s["url"] == "/v1/chat/completions"]
        assert len(chats) == 1 and chats[0]["model"] == "h1" and "t3" not in chats[0]  # no base request, no t3
        assert "not served here" in out["baseStatus"] and out["headStatus"].startswith("done")
        assert out["headAnswer"] == _streamed_chat(_client(url), "h1", "Who?")


# --------------------------------------------------------------------------- the command: keys, logs, a second SIGTERM


def test_cli_with_a_key_logs_request_ids_and_stops_cleanly_on_a_second_sigterm(lm, tmp_path):
    """The real command, its key from T3UNLEARN_API_KEY: 401 without it; the access log carries request ids;
    SIGTERM twice with requests in flight answers each with a JSON 503 (a stream: an error event) and
    exits 0 without a traceback."""
    import os
    import signal
    import subprocess
    import sys

    base, tok, heads = lm
    base.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    sock = _free_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = dict(os.environ, T3UNLEARN_API_KEY=API_KEY,
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "t3unlearn", "serve", "--model", str(tmp_path / "base"), "--name", "base",
                             "--head", f"h1={heads['h1']}", "--port", str(port), "--threads", "1", "--max-batch", "1",
                             "--force-heads"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read()
            with contextlib.suppress(OSError):
                if _http(url, "/health", timeout=2)[0] == 200:
                    break
            assert time.monotonic() < end, "the server did not come up"
            time.sleep(0.1)
        assert _http(url, "/v1/models")[0] == 401
        status, headers, _ = _http(url, "/v1/models", headers={"Authorization": f"Bearer {API_KEY}", "X-Request-Id": "trace-cli-1"})
        assert status == 200 and headers["X-Request-Id"] == "trace-cli-1"
        client = _client(url, API_KEY)
        body = {"model": "h1", "prompt": PROMPT, "max_tokens": 200, "ignore_eos": True}
        auth = {"Authorization": f"Bearer {API_KEY}"}
        with concurrent.futures.ThreadPoolExecutor(4) as pool:  # --max-batch 1: the stream decodes, the others wait
            stream = client.completions.create(model="h1", prompt=PROMPT, max_tokens=200, stream=True, extra_body={"ignore_eos": True})
            first = next(iter(stream))
            assert first.choices
            plain = [pool.submit(_http, url, "/v1/completions", body, headers=auth) for _ in range(3)]
            end = time.monotonic() + 30
            while _http(url, "/health")[2]["waiting"] + sum(f.done() for f in plain) < 3:
                assert time.monotonic() < end, "the three requests did not arrive"
                time.sleep(0.005)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            try:  # the stream was decoding: it may have finished between the signals, else it ends with an error event
                list(stream)
                cut = 0
            except openai.APIError as e:
                assert "stopped" in str(e) and "shutting_down" in json.dumps(e.body), e.body
                cut = 1
            answers = [f.result() for f in plain]
        stopped = [out for s, _h, out in answers if s != 200]
        assert all(out["error"]["code"] == "shutting_down" for out in stopped), answers  # JSON, no plain-text 500
        assert cut + len(stopped) >= 2  # four requests of 200 tokens decoded one at a time: most were in flight
        assert proc.wait(30) == 0
        out = proc.stdout.read()
        assert "received SIGTERM again: stopping now" in out and "stopped" in out
        assert "Traceback" not in out and "Event loop is closed" not in out, out
        assert "request_id=trace-cli-1" in out and "access: API key: required" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_on_a_port_in_use_says_so_without_claiming_to_serve(lm, tmp_path, capsys, monkeypatch):
    from t3unlearn.commands import serve as serve_command
    from t3unlearn.commands.main import main

    base, tok, _heads = lm
    base.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    monkeypatch.setattr(serve_command, "_log_to_stderr", lambda level: None)  # keep the log handlers of later tests
    taken = _free_socket()
    taken.listen()
    try:
        assert main(["serve", "--model", str(tmp_path / "base"), "--port", str(taken.getsockname()[1]), "--threads", "1"]) == 2
    finally:
        taken.close()
    out, err = capsys.readouterr()
    assert "serving" not in out and "could not listen on 127.0.0.1:" in err, out + err
