"""t3unlearn serve, live: a server on a free localhost port driven by the official ``openai`` client.

The models are the tiny world's (trained in seconds) with two T3 heads trained here; the reference for
every greedy answer is ``T3ForCausalLM.generate`` on a separate copy of the base. No figure or text of
the world is hard-coded: answers are compared with what the models generate.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

openai = pytest.importorskip("openai", reason="the serve tests use the openai package as the client (pip install -e .[test])")
pytest.importorskip("fastapi", reason="t3unlearn serve needs fastapi and uvicorn")

MAX_BODY = 64 * 1024
ADMIN_KEY = "admin-key-for-tests"  # head management needs it (no API key: the other routes are open)


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def served(app):
    """``app`` served by uvicorn in a thread on a free loopback port: yields its URL, and stops it afterwards."""
    import uvicorn

    sock = _free_socket()
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    end = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < end and thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    try:
        yield "http://127.0.0.1:%d" % sock.getsockname()[1]
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def world_heads(tiny_world, tiny_models, tmp_path_factory):
    """Two heads over the tiny world's full model: f10 (forget10, T=2.5, s=1, the default tempering) and f05
    (forget05, saved T=2, s=1.5, global tempering)."""
    from t3unlearn.data import load_qa
    from t3unlearn.lm import load_model, load_tokenizer
    from t3unlearn.t3 import unlearn

    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and far faster on a busy machine
    full = str(tiny_models["full"])
    model, tok = load_model(full, device="cpu"), load_tokenizer(full)
    root = tmp_path_factory.mktemp("serve")
    heads = {}
    for name, forget, retain, T, s, tempering in (("f10", "forget10", "retain90", 2.5, 1.0, "adaptive"),
                                                  ("f05", "forget05", "retain95", 2.0, 1.5, "global")):
        t3, _ = unlearn(model, tok, load_qa(str(tiny_world), forget), load_qa(str(tiny_world), retain), epochs=20,
                        hidden_size=16, temperature=T, scale=s, tempering=tempering)
        t3.save_pretrained(root / name)
        heads[name] = str(root / name)
    questions = list(load_qa(str(tiny_world), "forget10")["question"][:3]) + list(load_qa(str(tiny_world), "retain90")["question"][:2])
    yield {"full": full, "heads": heads, "root": root, "questions": questions}
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def cli_server(world_heads):
    """The real command, ``python -m t3unlearn serve``, in its own process on a free port. Started before the
    in-process tests (the ``server`` fixture asks for it) so that its start-up overlaps them; the SIGTERM
    test, last in this file, stops it."""
    sock = _free_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "t3unlearn", "serve", "--model", world_heads["full"], "--name", "tiny-full",
                             "--head", f"f10={world_heads['heads']['f10']}", "--port", str(port), "--threads", "1", "--no-access-log"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    yield proc, f"http://127.0.0.1:{port}"
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def server(world_heads, cli_server):
    """A live server (uvicorn in a thread, the app ``t3unlearn serve`` builds) and an openai client."""
    from t3unlearn.lm import load_model, load_tokenizer
    from t3unlearn.serve.app import build
    from t3unlearn.serve.security import Security

    full = world_heads["full"]
    model, tok = load_model(full, device="cpu"), load_tokenizer(full)
    app, state = build(model, tok, base_id="tiny-full", base_path=full, heads=world_heads["heads"], max_batch=16, max_n=4,
                       max_body=MAX_BODY, security=Security(admin_key=ADMIN_KEY))
    with served(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        admin = openai.OpenAI(base_url=url + "/v1", api_key=ADMIN_KEY, max_retries=0, timeout=60)
        yield {"url": url, "client": client, "admin": admin, "state": state, "tok": tok, **world_heads}
    state.engine.close()


@pytest.fixture(scope="module")
def refs(world_heads):
    """Reference models on their own copy of the base: {"tiny-full": base, "f10": T3, "f05": T3}, and the tokenizer."""
    from transformers import AutoModelForCausalLM

    from t3unlearn.lm import load_tokenizer
    from t3unlearn.t3.model import T3ForCausalLM

    full = world_heads["full"]
    base = AutoModelForCausalLM.from_pretrained(full).eval()
    models = {"tiny-full": base}
    for name, path in world_heads["heads"].items():
        models[name] = T3ForCausalLM.from_base(base, path)
    return models, load_tokenizer(full)


@torch.no_grad()
def _generate(model, tok, prompt_ids, n):
    """New token ids from ``generate`` (greedy), through the first EOS."""
    ids = torch.tensor([prompt_ids])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)[0, ids.shape[1]:].tolist()
    return out[: out.index(tok.eos_token_id) + 1] if tok.eos_token_id in out else out


def _prompt(q):
    return f"Question: {q}\nAnswer:"


def _ok(client, model="tiny-full"):
    """A good request right after a bad one is served normally."""
    r = client.completions.create(model=model, prompt="Question: Who?\nAnswer:", max_tokens=2, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens >= 1


# --------------------------------------------------------------------------- generation


def test_models_and_health(server):
    client = server["client"]
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {"tiny-full", "f10", "f05"}
    assert models["tiny-full"].parent is None
    f05 = models["f05"].model_dump()
    assert f05["parent"] == "tiny-full" and f05["t3"]["temperature"] == 2.0 and f05["t3"]["scale"] == 1.5
    assert f05["t3"]["bytes"] == os.path.getsize(Path(server["heads"]["f05"]) / "head.safetensors") - _header_len(server["heads"]["f05"])
    health = json.loads(urllib.request.urlopen(server["url"] + "/health").read())
    assert health["status"] == "ok" and health["heads"] == 2


def _header_len(head_dir) -> int:
    raw = (Path(head_dir) / "head.safetensors").read_bytes()
    return 8 + int.from_bytes(raw[:8], "little")


def test_greedy_text_equals_generate_for_concurrent_mixed_heads(server, refs):
    """Completions for the base and two heads, sent together (one batch), each equal generate() alone."""
    client, (models, tok) = server["client"], refs
    jobs = [(m, q) for q in server["questions"] for m in ("tiny-full", "f10", "f05")]

    def complete(job):
        m, q = job
        return client.completions.create(model=m, prompt=_prompt(q), max_tokens=24, temperature=0)

    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(complete, jobs))
    differs = 0
    for (m, q), r in zip(jobs, results):
        prompt_ids = tok(_prompt(q))["input_ids"]
        want = _generate(models[m], tok, prompt_ids, 24)
        text = tok.decode([t for t in want if t != tok.eos_token_id], skip_special_tokens=True)
        assert r.choices[0].text == text, (m, q)
        assert r.choices[0].finish_reason == ("stop" if want[-1] == tok.eos_token_id else "length")
        assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(prompt_ids), len(want))
        if m != "tiny-full":
            assert r.model_extra["t3"]["head"] == m
            differs += text != next(x.choices[0].text for (mm, qq), x in zip(jobs, results) if mm == "tiny-full" and qq == q)
    assert differs > 0  # the heads do change answers


def test_chat_uses_the_projects_template(server, refs):
    from t3unlearn.lm import CausalLM

    client, (models, tok) = server["client"], refs
    q = server["questions"][0]
    for m in ("tiny-full", "f10"):
        r = client.chat.completions.create(model=m, messages=[{"role": "user", "content": q}], max_tokens=24, temperature=0)
        want = CausalLM(models[m], tok).generate([q], max_new_tokens=24)[0]
        assert r.choices[0].message.role == "assistant" and r.choices[0].message.content.strip() == want
    # the default max_tokens of chat is the rest of the context
    r = client.chat.completions.create(model="f10", messages=[{"role": "user", "content": q}], temperature=0, extra_body={"ignore_eos": True})
    assert r.usage.prompt_tokens + r.usage.completion_tokens == server["state"].engine.context
    assert r.choices[0].finish_reason == "length"


def test_streaming(server):
    client, q = server["client"], server["questions"][1]
    kw = dict(model="f10", prompt=_prompt(q), max_tokens=20, temperature=0, extra_body={"ignore_eos": True})
    whole = client.completions.create(**kw)
    chunks = list(client.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert len(texts) >= 5 and "".join(texts) == whole.choices[0].text  # streamed piece by piece
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens

    msgs = [{"role": "user", "content": q}]
    whole = client.chat.completions.create(model="f05", messages=msgs, max_tokens=20, temperature=0)
    chunks = list(client.chat.completions.create(model="f05", messages=msgs, max_tokens=20, temperature=0, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content
    raw = client.completions.create(model="f05", prompt=_prompt(q), max_tokens=20, temperature=0).choices[0].text
    assert raw.startswith(" ") and whole.choices[0].message.content == raw[1:]  # chat drops the space after "Answer:" only
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason

    # the wire format: server-sent events, OpenAI's chunks, ending with [DONE]
    body = json.dumps({"model": "tiny-full", "prompt": _prompt(q), "max_tokens": 5, "temperature": 0, "stream": True}).encode()
    req = urllib.request.Request(server["url"] + "/v1/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = [e for e in resp.read().decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "text_completion"


def test_n_seed_stop_and_logprobs(server):
    client, q = server["client"], server["questions"][2]
    kw = dict(model="f10", prompt=_prompt(q), max_tokens=12, temperature=1.0, top_p=0.95, n=3, seed=11, logprobs=0)
    a, b = client.completions.create(**kw), client.completions.create(**kw)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.text for c in a.choices] == [c.text for c in b.choices]  # the same seed, the same samples
    # logprobs cover each choice's text; the EOS that ended a choice counts as generated but is not in it
    assert a.usage.completion_tokens == sum(len(c.logprobs.tokens) + (c.finish_reason == "stop") for c in a.choices)

    greedy = client.completions.create(model="tiny-full", prompt=_prompt(q), max_tokens=24, temperature=0, logprobs=3)
    text, lp = greedy.choices[0].text, greedy.choices[0].logprobs
    assert "".join(lp.tokens) == text
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert chosen <= 0 and len(top) == 3 and abs(chosen - max(top.values())) < 1e-5  # greedy takes the top token
    words = text.split()
    stop = words[len(words) // 2]
    cut = client.completions.create(model="tiny-full", prompt=_prompt(q), max_tokens=24, temperature=0, stop=["#never#", stop])
    assert cut.choices[0].text == text[: text.index(stop)] and cut.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model="tiny-full", prompt=_prompt(q), max_tokens=24, temperature=0, stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == cut.choices[0].text

    chat = client.chat.completions.create(model="f10", messages=[{"role": "user", "content": q}], max_tokens=6, temperature=0,
                                          logprobs=True, top_logprobs=2)
    content = chat.choices[0].logprobs.content
    assert "".join(t.token for t in content) == " " + chat.choices[0].message.content  # tokens as generated
    assert all(len(t.top_logprobs) == 2 and t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob for t in content)


def test_t3_knobs_per_request(server):
    client, q = server["client"], server["questions"][0]
    base = client.completions.create(model="tiny-full", prompt=_prompt(q), max_tokens=20, temperature=0)
    off = client.completions.create(model="f10", prompt=_prompt(q), max_tokens=20, temperature=0,
                                    extra_body={"t3": {"temperature": 1, "scale": 0}})
    assert off.choices[0].text == base.choices[0].text  # T = 1, s = 0: the base itself
    assert off.model_extra["t3"] | {"head": "f10", "temperature": 1.0, "scale": 0.0} == off.model_extra["t3"]
    half = client.completions.create(model="f05", prompt=_prompt(q), max_tokens=2, temperature=0, extra_body={"t3": {"scale": 0.5}})
    assert half.model_extra["t3"] | {"head": "f05", "temperature": 2.0, "scale": 0.5} == half.model_extra["t3"]  # T: the saved one
    # the other guidance knobs of T3ForCausalLM, per request: greedy text as generate() gives with them
    from t3unlearn.t3.model import T3ForCausalLM

    knobs = {"tempering": "global", "tail_logp": -6.0, "bias": 0.5, "floor": -0.5, "copy_floor": 3.0,
             "piece_floor": 2.0, "spelling": "base"}  # f10: adaptive, no floor
    got = client.completions.create(model="f10", prompt=_prompt(q), max_tokens=20, temperature=0, extra_body={"t3": knobs})
    assert got.model_extra["t3"] | knobs == got.model_extra["t3"]
    ref = T3ForCausalLM.from_base(server["full"], server["heads"]["f10"], **knobs)
    tok = server["tok"]
    want = _generate(ref, tok, tok(_prompt(q))["input_ids"], 20)
    assert got.choices[0].text == tok.decode([t for t in want if t != tok.eos_token_id], skip_special_tokens=True)
    # the base's spelling is applied, not only echoed: the served log-probs move without it
    spelled, unspelled = (client.completions.create(model="f10", prompt=_prompt(q), max_tokens=5, temperature=0, logprobs=0,
                                                    extra_body={"t3": {**knobs, "spelling": sp}}) for sp in ("base", "guided"))
    assert spelled.choices[0].logprobs.token_logprobs != unspelled.choices[0].logprobs.token_logprobs
    # the copy exemption, per request: the tokens of the context are spared the tilt, as generate() spares them
    copy = {"scale": 5.0, "copy_floor": 10.0}
    got = client.completions.create(model="f10", prompt=_prompt(q), max_tokens=20, temperature=0, extra_body={"t3": copy})
    want = _generate(T3ForCausalLM.from_base(server["full"], server["heads"]["f10"], **copy), tok,
                     tok(_prompt(q))["input_ids"], 20)
    assert got.choices[0].text == tok.decode([t for t in want if t != tok.eos_token_id], skip_special_tokens=True)
    tilted = client.completions.create(model="f10", prompt=_prompt(q), max_tokens=20, temperature=0,
                                       extra_body={"t3": {"scale": 5.0}})
    assert tilted.choices[0].text != got.choices[0].text
    # the support gate, per request: a low quantile fades the guidance out almost everywhere
    gated = client.completions.create(model="f10", prompt=_prompt(q), max_tokens=20, temperature=0,
                                      extra_body={"t3": {"support": 0.01}})
    ref = T3ForCausalLM.from_base(server["full"], server["heads"]["f10"], support=0.01)
    want = _generate(ref, tok, tok(_prompt(q))["input_ids"], 20)
    assert gated.choices[0].text == tok.decode([t for t in want if t != tok.eos_token_id], skip_special_tokens=True)
    ungated = client.completions.create(model="f10", prompt=_prompt(q), max_tokens=20, temperature=0)
    assert gated.choices[0].text != ungated.choices[0].text


def test_heads_added_and_removed_at_run_time(server):
    client, admin, heads = server["client"], server["admin"], server["heads"]
    q = server["questions"][0]
    card = admin.post("/heads", cast_to=object, body={"name": "request-17", "path": heads["f05"]})
    assert card["id"] == "request-17" and card["parent"] == "tiny-full" and str(server["root"]) not in json.dumps(card)
    assert "request-17" in {m.id for m in client.models.list().data}
    same = [client.completions.create(model=m, prompt=_prompt(q), max_tokens=16, temperature=0).choices[0].text
            for m in ("request-17", "f05")]
    assert same[0] == same[1]
    with pytest.raises(openai.ConflictError) as e:
        admin.post("/heads", cast_to=object, body={"name": "request-17", "path": heads["f05"]})
    assert e.value.body["param"] == "name"
    assert admin.delete("/heads/request-17", cast_to=object) == {"id": "request-17", "object": "model", "deleted": True}
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="request-17", prompt="x", max_tokens=1)
    assert e.value.body["param"] == "model" and e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError) as e:  # a huge name is not echoed back whole
        client.completions.create(model="x" * 10_000, prompt="x", max_tokens=1)
    assert "10,000 characters" in e.value.body["message"] and len(e.value.body["message"]) < 500
    with pytest.raises(openai.NotFoundError):
        admin.delete("/heads/request-17", cast_to=object)
    # a bad head is refused with a clear error, and the server keeps serving
    broken = server["root"] / "broken"
    shutil.copytree(heads["f10"], broken)
    (broken / "head.safetensors").write_bytes(b"\x00" * 100)
    for path, words in ((str(broken), "corrupt"), (str(server["root"] / "nowhere"), "not a directory")):
        with pytest.raises(openai.BadRequestError) as e:
            admin.post("/heads", cast_to=object, body={"name": "broken", "path": path})
        assert e.value.body["param"] == "path" and words in e.value.body["message"]
        assert str(server["root"]) not in e.value.body["message"]  # no server path in a response
        _ok(client, "f10")
    assert {m.id for m in client.models.list().data} == {"tiny-full", "f10", "f05"}


# --------------------------------------------------------------------------- bad requests

BAD = [  # (what, kwargs of completions.create, status, param)
    ("unknown model", dict(model="no-such-head"), 404, "model"),
    ("max_tokens 0", dict(max_tokens=0), 400, "max_tokens"),
    ("max_tokens over the context", dict(max_tokens=100_000), 400, "max_tokens"),
    ("mistyped max_tokens", dict(max_tokens="ten"), 400, "max_tokens"),
    ("negative temperature", dict(temperature=-0.5), 400, "temperature"),
    ("top_p 0", dict(top_p=0), 400, "top_p"),
    ("top_p over 1", dict(top_p=1.5), 400, "top_p"),
    ("n too large", dict(n=50), 400, "n"),
    ("prompt over the context", dict(prompt="Question: " + "who " * 1000), 400, "prompt"),
    ("mistyped stop", dict(stop=5), 400, "stop"),
    ("unsupported echo", dict(echo=True), 400, "echo"),
    ("unsupported logit_bias", dict(logit_bias={"5": 3}), 400, "logit_bias"),
    ("unknown parameter", dict(extra_body={"mirostat": 2}), 400, "mirostat"),
    ("bad T", dict(model="f10", extra_body={"t3": {"temperature": 0}}), 400, "t3.temperature"),
    ("bad tempering", dict(model="f10", extra_body={"t3": {"tempering": "sideways"}}), 400, "t3.tempering"),
    ("positive tail_logp", dict(model="f10", extra_body={"t3": {"tail_logp": 1.0}}), 400, "t3.tail_logp"),
    ("support above 1", dict(model="f10", extra_body={"t3": {"support": 1.5}}), 400, "t3.support"),
    ("positive floor", dict(model="f10", extra_body={"t3": {"floor": 2.0}}), 400, "t3.floor"),
    ("t3 on the base", dict(extra_body={"t3": {"scale": 2}}), 400, "t3"),
    ("empty t3 on the base", dict(extra_body={"t3": {}}), 400, "t3"),
    ("token id outside the vocabulary", dict(prompt=[1, 2, 10**9]), 400, "prompt"),
]


@pytest.mark.parametrize("what,kw,status,param", BAD, ids=[b[0] for b in BAD])
def test_bad_completion_requests(server, what, kw, status, param):
    client = server["client"]
    args = dict(model="tiny-full", prompt="Question: Who?\nAnswer:", max_tokens=4) | kw
    with pytest.raises(openai.APIStatusError) as e:
        client.completions.create(**args)
    assert e.value.status_code == status, e.value.body
    assert e.value.body["param"] == param and e.value.body["type"] == "invalid_request_error" and e.value.body["message"]
    _ok(client)


def test_bad_bodies_and_chat_requests(server):
    client = server["client"]
    json_headers = {"headers": {"Content-Type": "application/json"}}

    def raw(path, content, method="post", options=json_headers):
        with pytest.raises(openai.APIStatusError) as e:
            getattr(client, method)(path, cast_to=object, content=content, options=options)
        return e.value

    e = raw("/completions", b'{"model": "tiny-full", "prompt": ')
    assert e.status_code == 400 and e.body["code"] == "invalid_json" and "not valid JSON" in e.body["message"]
    _ok(client)
    e = raw("/completions", b"[1, 2, 3]")
    assert e.status_code == 400 and "JSON object" in e.body["message"]
    # a JSON object is read as JSON whatever its Content-Type or none (curl's -d alone sends a form's); a browser's must say JSON
    body = json.dumps({"model": "tiny-full", "prompt": "Question: Who?\nAnswer:", "max_tokens": 2, "temperature": 0}).encode()
    for kind in ("application/x-www-form-urlencoded", "text/plain", openai.Omit()):
        assert client.post("/completions", cast_to=object, content=body, options={"headers": {"Content-Type": kind}})["choices"]
    e = raw("/completions", b"model=tiny-full&prompt=x", options={"headers": {"Content-Type": "application/x-www-form-urlencoded"}})
    assert e.status_code == 400 and e.body["code"] == "invalid_json"
    e = raw("/completions", body, options={"headers": {"Content-Type": "text/plain", "Origin": "https://elsewhere.example"}})
    assert e.status_code == 400 and "header 'Content-Type: application/json'" in e.body["message"], e.body
    e = raw("/chat/completions", json.dumps({"model": "tiny-full", "messages": [{"role": "user", "content": "x" * 2 * MAX_BODY}]}).encode())
    assert e.status_code == 413 and e.body["code"] == "request_too_large"
    _ok(client)
    e = raw("/nowhere", b"{}")
    assert e.status_code == 404 and e.body["message"].startswith("no such endpoint")

    chat_bad = [
        (dict(model="tiny-full"), "messages"),
        (dict(model="tiny-full", messages=[]), "messages"),
        (dict(model="tiny-full", messages=[{"role": "robot", "content": "hi"}]), "messages[0].role"),
        (dict(model="tiny-full", messages=[{"role": "user", "content": 42}]), "messages[0].content"),
        (dict(model="tiny-full", messages=[{"role": "user", "content": None}]), "messages[0].content"),
        (dict(model="tiny-full", messages=[{"role": "system", "content": "Be brief."}, {"role": "user"}]), "messages[1].content"),
        (dict(model="tiny-full", messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]), "messages[1].role"),
        (dict(model="tiny-full", messages=[{"role": "user", "content": "hi"}], tools=[{"type": "function"}]), "tools"),
        (dict(model="tiny-full", messages=[{"role": "user", "content": "hi"}], max_completion_tokens=-1), "max_completion_tokens"),
        (dict(model="tiny-full", messages=[{"role": "user", "content": "hi"}], top_logprobs=2), "top_logprobs"),
    ]
    for body, param in chat_bad:
        e = raw("/chat/completions", json.dumps(body).encode())
        assert e.status_code == 400 and e.body["param"] == param, (body, e.body)
        _ok(client)


# --------------------------------------------------------------------------- the playground, in a real browser


def _chromium() -> str | None:
    for cand in (os.environ.get("T3UNLEARN_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if cand and shutil.which(cand):
            return shutil.which(cand)
    return None


def test_playground_in_a_browser(server):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playground test drives Chromium with playwright (pip install -e .[test])")
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium); the playground test needs a real browser")
    client, q = server["client"], server["questions"][0]

    def chat(model, **kw):
        return client.chat.completions.create(model=model, messages=[{"role": "user", "content": q}], max_tokens=24,
                                              temperature=0, **kw).choices[0].message.content

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page()
            sent = []
            page.on("request", lambda r: sent.append(json.loads(r.post_data)) if r.url.endswith("/chat/completions") else None)
            page.goto(server["url"] + "/")
            page.wait_for_selector("#head option[value='f05']", state="attached")
            assert page.inner_text("#base-id") == "tiny-full"
            page.select_option("#head", "f10")
            assert (page.input_value("#T"), page.input_value("#s"), page.input_value("#tempering")) == ("2.5", "1", "adaptive")
            page.fill("#question", q)
            page.fill("#max-tokens", "24")
            page.click("#ask")
            page.wait_for_selector("#base-status[data-state=done]")
            page.wait_for_selector("#head-status[data-state=done]")
            assert page.inner_text("#base-answer").strip() == chat("tiny-full").strip()
            assert page.inner_text("#head-answer").strip() == chat("f10").strip()
            assert {s["model"] for s in sent} == {"tiny-full", "f10"} and all(s["stream"] for s in sent)

            # switch heads: the sliders take the head's saved T and s; move them to T = 1, s = 0 (the base)
            page.select_option("#head", "f05")
            assert (page.input_value("#T"), page.input_value("#s"), page.input_value("#tempering")) == ("2", "1.5", "global")
            page.fill("#T", "1")
            page.fill("#s", "0")
            assert page.inner_text("#T-value") == "1" and page.inner_text("#s-value") == "0"
            sent.clear()
            page.click("#ask")
            page.wait_for_function("document.getElementById('head-status').dataset.state === 'done'"
                                   " && document.getElementById('base-status').dataset.state === 'done'")
            head_req = next(s for s in sent if s["model"] == "f05")
            assert head_req["t3"] == {"temperature": 1, "scale": 0, "tempering": "global"}
            assert page.inner_text("#head-answer") == page.inner_text("#base-answer")
            assert page.inner_text("#head-answer").strip() == chat("f05", extra_body={"t3": {"temperature": 1, "scale": 0}}).strip()
            assert "error" not in page.inner_text("#head-status")
        finally:
            browser.close()


# --------------------------------------------------------------------------- the command, and SIGTERM


def test_cli_refuses_a_bad_head_in_one_line(world_heads, capsys):
    from t3unlearn.commands.main import main

    assert main(["serve", "--model", world_heads["full"], "--head", f"x={world_heads['root'] / 'nothing'}", "--threads", "1"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert len(err) == 1 and err[0].startswith("t3unlearn serve: error:") and "not a directory" in err[0]


def test_a_head_trained_on_other_prompts_than_the_server_formats_is_refused(world_heads, tiny_world, capsys, monkeypatch):
    """A head records its prompt template (chat / plain); the server formats every prompt one way (its base's
    tokenizer's chat template when it has one). A head trained the other way is refused in one line at start-up and
    on POST /v1/heads (HeadRegistry.add), even with --force-heads, instead of being served on prompts it never saw."""
    from t3unlearn.commands.main import main
    from t3unlearn.data import load_qa
    from t3unlearn.lm import load_model, load_tokenizer
    from t3unlearn.serve.app import build
    from t3unlearn.serve.heads import HeadError
    from t3unlearn.t3 import unlearn

    chat = world_heads["root"] / "chat-base"
    shutil.copytree(world_heads["full"], chat)
    tok = load_tokenizer(str(chat))
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<a>{% endif %}"
    tok.save_pretrained(chat)
    model = load_model(str(chat), device="cpu")
    plain_head = world_heads["heads"]["f10"]  # trained on plain prompts
    import uvicorn

    def never_runs(self, *a, **k):
        raise AssertionError("the server started with the head")

    monkeypatch.setattr(uvicorn.Server, "run", never_runs)
    argv = ["serve", "--model", str(chat), "--head", f"f10={plain_head}", "--threads", "1", "--force-heads"]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert len(err) == 1 and "was trained on plain prompts" in err[0] and "formats prompts as chat" in err[0], err
    t3, _ = unlearn(model, tok, load_qa(str(tiny_world), "forget10"), load_qa(str(tiny_world), "retain90"), epochs=1,
                    hidden_size=4)
    t3.save_pretrained(world_heads["root"] / "chat-head")
    assert t3.config.training["template"] == "chat"
    _, state = build(model, tok, base_id="chat", base_path=str(chat), heads={"c": str(world_heads["root"] / "chat-head")},
                     start=False)  # the head of its own prompts is served
    full = world_heads["full"]
    _, state = build(load_model(full, device="cpu"), load_tokenizer(full), base_id="plain", base_path=full, start=False)
    with pytest.raises(HeadError, match=r"was trained on chat prompts .* formats prompts as plain") as e:
        state.registry.add("c", str(world_heads["root"] / "chat-head"), force=True)
    assert "\n" not in str(e.value) and e.value.param == "path" and state.registry.names() == []


def test_cli_serves_and_drains_on_sigterm(cli_server):
    """The real command: it serves; on SIGTERM the request in flight finishes and a new one gets 503."""
    proc, url = cli_server
    end = time.monotonic() + 90
    while True:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if json.loads(urllib.request.urlopen(url + "/health", timeout=2).read())["status"] == "ok":
                break
        except OSError:
            pass
        assert time.monotonic() < end, "the server did not come up"
        time.sleep(0.1)
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
    assert {m.id for m in client.models.list().data} == {"tiny-full", "f10"}
    stream = client.completions.create(model="f10", prompt="Question: Who?\nAnswer:", max_tokens=240, temperature=0,
                                       stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    chunks = iter(stream)
    first = next(chunks)
    proc.send_signal(signal.SIGTERM)
    for _ in range(200):  # a new request while draining (the first ones may come before the signal lands)
        try:
            urllib.request.urlopen(url + "/health", timeout=5)
        except urllib.error.HTTPError as e:
            assert e.code == 503 and json.loads(e.read())["error"]["code"] == "shutting_down"
            break
        time.sleep(0.005)
    else:
        raise AssertionError("no 503 while draining")
    rest = list(chunks)  # the request in flight finishes
    assert rest[-1].usage.completion_tokens == 240
    assert [c.choices[0].finish_reason for c in [first] + rest if c.choices][-1] == "length"
    assert proc.wait(30) == 0
    out = proc.stdout.read()
    assert "draining 1 request(s)" in out and "stopped" in out and f"serving tiny-full on {url}/v1" in out
