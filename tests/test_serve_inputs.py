"""t3unlearn serve against bodies and settings the other serve tests do not send: bodies JSON cannot read, text
a tokenizer cannot encode, stop strings with logprobs, ``n`` beyond the queue, head management without a key,
and deployment settings that would undo the access control.

In process, over the untrained tiny Llama and the two tilting heads of ``test_serve_security``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import urllib.error
import urllib.request

import pytest
from test_serve_security import PROMPT, _client, _http, lm, serving  # noqa: F401 - lm is a fixture used here

pytest.importorskip("fastapi", reason="t3unlearn serve needs fastapi and uvicorn")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _raw(url, path, data: bytes):
    """(status, parsed JSON) of a POST of the bytes ``data`` as they are."""
    req = urllib.request.Request(url + path, data=data, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_unreadable_bodies_and_lone_surrogates_are_400_and_the_server_goes_on(lm):
    with serving(lm) as (url, _state):
        for body in (b'{"model": "h1", "prompt": "\xff\xfe"}',  # not UTF-8
                     b'{"model": "h1", "prompt": "x", "t3": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # too deep
                     b'{"model": "h1", "prompt": "x", "max_tokens": ' + b"9" * 5000 + b"}"):  # an int Python will not read
            status, out = _raw(url, "/v1/completions", body)
            assert status == 400 and out["error"]["code"] == "invalid_json" and "JSON" in out["error"]["message"], out
        # JSON's \ud800 escapes decode to lone surrogates, which no tokenizer encodes: the field at fault, not a 500
        for path, body, param in (
                ("/v1/completions", b'{"model": "h1", "prompt": "a \\ud800 b", "max_tokens": 2}', "prompt"),
                ("/v1/completions", b'{"model": "h1", "prompt": ["ok", "\\udfff"], "max_tokens": 2}', "prompt"),
                ("/v1/completions", b'{"model": "h1", "prompt": "\\ud800", "max_tokens": 2, "stream": true}', "prompt"),
                ("/v1/chat/completions", b'{"model": "h1", "messages": [{"role": "system", "content": "\\ud800"}, '
                 b'{"role": "user", "content": "Who?"}], "max_tokens": 2}', "messages[0].content"),
                ("/v1/chat/completions", b'{"model": "h1", "messages": [{"role": "user", "content": '
                 b'[{"type": "text", "text": "\\udc00"}]}], "max_tokens": 2}', "messages[0].content")):
            status, out = _raw(url, path, body)
            assert status == 400 and out["error"]["param"] == param and "surrogate" in out["error"]["message"], out
        r = _client(url).completions.create(model="h1", prompt="Où 🎉 " + PROMPT, max_tokens=3)  # real Unicode is served
        assert r.choices[0].finish_reason in ("length", "stop")


def test_a_stop_string_cuts_the_logprobs_with_the_text(lm):
    """The docs: ``logprobs`` cover the tokens of the returned text. A stop string that begins where a token begins
    cuts that token (and those after it) from the logprobs, streamed or not: what is kept is exactly the tokens
    whose text starts before the cut."""
    from t3unlearn.serve.engine import Engine, Sequence, wait_idle

    base, tok, _heads = lm
    engine = Engine(copy.deepcopy(base), tok, max_batch=4).start()
    try:
        found = None
        for question in ("Hi", PROMPT, "I don't know. That is not", "Question: What is the capital of France?\nAnswer:"):
            prompt = list(tok(question)["input_ids"])  # an untrained model: find an answer with a place to cut
            free = Sequence(prompt, None, max_tokens=48, sampling_temperature=0.0, ignore_eos=True)
            engine.submit([free])
            assert wait_idle(engine)
            text, out = free.text, free.out_ids
            starts = [len(tok.decode(out[:k], skip_special_tokens=True).rstrip("\ufffd")) for k in range(len(out) + 1)]
            # token k begins at a whole character, and a stop string from there, reaching into the next token (streamed,
            # token k's text is held back then, as a stop string may begin there), first occurs there
            found = next(((k, text[starts[k]: starts[k + 1] + w]) for k in range(2, len(out) - 1) for w in (1, 2, 3)
                          if starts[k - 1] < starts[k] < starts[k + 1] and starts[k + 1] + w <= len(text)
                          and "\ufffd" not in text[starts[k]: starts[k + 1] + w]
                          and text.find(text[starts[k]: starts[k + 1] + w]) == starts[k]), None)
            if found:
                break
        assert found, text
        cut, stop = found
        for stream in (False, True):
            got = []
            seq = Sequence(prompt, None, max_tokens=48, sampling_temperature=0.0, ignore_eos=True, logprobs=0, stop=(stop,),
                           stream=stream, emit=lambda s, delta, tokens, reason: got.extend(tokens))
            engine.submit([seq])
            assert wait_idle(engine)
            assert seq.finish_reason == "stop" and seq.text == text[: starts[cut]]
            assert [t.token_id for t in got] == out[:cut], (stream, stop, cut)  # not token ``cut``, which the text lacks
    finally:
        engine.close()


def test_more_sequences_than_the_queue_holds_is_400_not_429(lm):
    """429 says "retry in a moment"; a request that can never be queued must say what to change instead."""
    with serving(lm, max_queue=2) as (url, _state):
        status, _h, out = _http(url, "/v1/completions", {"model": "h1", "prompt": PROMPT, "max_tokens": 2, "n": 3})
        assert status == 400 and out["error"]["param"] == "n" and "--max-queue" in out["error"]["message"], out
        status, _h, out = _http(url, "/v1/completions", {"model": "h1", "prompt": PROMPT, "max_tokens": 2, "n": 2})
        assert status == 200 and len(out["choices"]) == 2


def test_a_chat_prompt_over_the_context_names_messages(lm):
    """A chat request has no 'prompt': a conversation longer than the context is the fault of 'messages'."""
    with serving(lm) as (url, state):
        long = "word " * state.engine.context
        for extra in ({}, {"max_tokens": 2}, {"max_completion_tokens": 2}):
            body = {"model": "h1", "messages": [{"role": "user", "content": long}], **extra}
            status, _h, out = _http(url, "/v1/chat/completions", body)
            assert status == 400 and out["error"]["code"] == "context_length_exceeded", out
            assert out["error"]["param"] == "messages", out
        status, _h, out = _http(url, "/v1/completions", {"model": "h1", "prompt": long})
        assert status == 400 and out["error"]["param"] == "prompt", out


def test_head_management_errors_name_the_admin_key_and_the_route(lm):
    from t3unlearn.serve.security import Security

    with serving(lm, security=Security(admin_key="the-admin-key")) as (url, _state):  # no API key: /v1 is open
        status, _h, out = _http(url, "/v1/heads", {"name": "x", "path": "/nowhere"})
        assert status == 401 and "admin key" in out["error"]["message"] and "API key" not in out["error"]["message"], out
        status, _h, out = _http(url, "/v1/heads/nope", method="DELETE", headers={"Authorization": "Bearer the-admin-key"})
        assert status == 404 and "GET /v1/models" in out["error"]["message"], out  # a route, not a path to redact


def test_settings_that_undo_access_control_are_refused(tmp_path, capsys):
    from t3unlearn.commands.main import main
    from t3unlearn.serve.security import Security

    with pytest.raises(ValueError, match="must differ"):  # one key for both: every client could remove heads
        Security(api_key="same-key", admin_key="same-key")
    for args in (["--api-key", "same-key", "--admin-key", "same-key"], ["--request-timeout", "nan"]):
        assert main(["serve", "--model", str(tmp_path / "none"), "--threads", "1", *args]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
        assert len(err) == 1 and err[0].startswith("t3unlearn serve: error:") and (args[0] in err[0]), err


def test_many_short_messages_are_rendered_off_the_event_loop(lm, monkeypatch):
    """A long prompt costs its own request only (docs/serve.md): 30,000 empty messages are 360 KB of template text,
    rendered and tokenized in a worker thread like one long message; a short conversation stays on the loop."""
    from t3unlearn.serve import generate

    where, render = [], generate.chat_prompt_ids

    def spy(*args):
        try:
            asyncio.get_running_loop()
            where.append("event loop")
        except RuntimeError:  # no running loop: a worker thread
            where.append("worker")
        return render(*args)

    monkeypatch.setattr(generate, "chat_prompt_ids", spy)
    with serving(lm, max_body=1 << 20) as (url, _state):
        short = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                 {"role": "user", "content": "Who?"}]
        status, _h, _out = _http(url, "/v1/chat/completions", {"model": "h1", "messages": short, "max_tokens": 1})
        assert status == 200 and where == ["event loop"]
        many = [{"role": "user", "content": ""}] * 30_000 + [{"role": "user", "content": "Who?"}]
        status, _h, out = _http(url, "/v1/chat/completions", {"model": "h1", "messages": many, "max_tokens": 1})
        assert status == 400 and out["error"]["code"] == "context_length_exceeded" and where[-1] == "worker", where


def test_a_head_named_as_the_base_is_refused_in_one_line(tmp_path, capsys):
    """Before: the base was loaded, then 'a model named ... is already served; delete it first', which a command
    line cannot do."""
    from t3unlearn.commands.main import main

    for args in (["--name", "h1", "--head", f"h1={tmp_path / 'head'}"], ["--head", f"base={tmp_path / 'head'}"]):
        assert main(["serve", "--model", str(tmp_path / "base"), "--threads", "1", *args]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
        assert len(err) == 1 and "the base model's name" in err[0] and "--name" in err[0], err
