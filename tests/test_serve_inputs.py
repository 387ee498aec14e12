"""t3unlearn serve against bodies and settings the other serve tests do not send: bodies JSON cannot read, text
a tokenizer cannot encode, stop strings with logprobs, ``n`` beyond the queue, head management without a key,
and deployment settings that would undo the access control.

In process, over the untrained tiny Llama and the two tilting heads of ``test_serve_security``.
"""

from __future__ import annotations

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
