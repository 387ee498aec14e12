"""One Guidance, end to end: every knob's bounds (in its field's metadata) are enforced by the dataclass, the
command line and the server, with one message; and the old spellings of renamed options still work."""

from __future__ import annotations

import argparse

import pytest

from t3unlearn.errors import ModelError
from t3unlearn.serve.schemas import HeadRequest, T3Knobs
from t3unlearn.t3.config import GUIDANCE_META, Guidance, check_knob, knob_flag


def _bad_values(meta: dict) -> list:
    """Values just outside a knob's bounds, read from its metadata (the bound itself where it is exclusive)."""
    if meta["choices"]:
        return ["sideways"]
    out = []
    if meta["low"] is not None:
        out.append(meta["low"] if meta["low_open"] else meta["low"] - 1)
    if meta["high"] is not None:
        out.append(meta["high"] if meta["high_open"] else meta["high"] + 1)
    return out + ["nan"]


def _good_value(name: str, meta: dict):
    """A value inside both the knob's bounds and the server's range."""
    if meta["choices"]:
        return meta["choices"][-1]
    lo, hi = meta["serve"] or (meta["low"], meta["high"])
    lo = -2.0 if lo is None else lo
    hi = 2.0 if hi is None else hi
    return (lo + hi) / 2


CASES = [(name, v) for name, meta in GUIDANCE_META.items() for v in _bad_values(meta)]


def _message(name: str, value) -> str:
    with pytest.raises(ModelError) as e:
        check_knob(name, value)
    return str(e.value).rstrip(".")


@pytest.fixture(scope="module")
def parser():
    from t3unlearn.t3.options import add_guidance_options

    p = argparse.ArgumentParser(prog="t3unlearn generate")
    add_guidance_options(p)
    return p


@pytest.fixture(scope="module")
def server():
    """A FastAPI app with the server's error handler and its head request (the guidance fields of POST /v1/heads),
    and a request's ``t3``."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.testclient import TestClient

    from t3unlearn.serve.errors import validation_error_response

    app = FastAPI()
    app.add_exception_handler(RequestValidationError, lambda request, exc: validation_error_response(exc))

    @app.post("/heads")
    def heads(req: HeadRequest):
        return req.guidance_changes()

    @app.post("/knobs")
    def knobs(req: T3Knobs):
        return req.changes()

    with TestClient(app) as client:
        yield client


def _post(server, path: str, body: dict):
    r = server.post(path, json={"name": "h", "path": "d", **body} if path == "/heads" else body)
    return r.status_code, r.json()


@pytest.mark.parametrize("name,value", CASES, ids=[f"{n}={v}" for n, v in CASES])
def test_every_bound_is_enforced_everywhere_with_one_message(name, value, parser, server, capsys):
    msg = _message(name, value)
    assert msg.startswith(name)
    # the dataclass
    with pytest.raises(ModelError) as e:
        Guidance(**{name: value})
    assert str(e.value).rstrip(".") == msg
    # the command line: argparse's one-line error, with the same message
    with pytest.raises(SystemExit):
        parser.parse_args([f"{knob_flag(name)}={value}"])
    err = capsys.readouterr().err
    assert f"argument {knob_flag(name)}: {msg}" in err, err
    # the server: a 400 naming the field, with the same message (JSON has no nan: that one pydantic refuses itself)
    if value == "nan":
        return
    for path, param in (("/heads", name), ("/knobs", name)):
        status, body = _post(server, path, {name: value})
        assert status == 400 and body["error"]["param"] == param, body
        assert body["error"]["message"] == f"invalid '{param}': {msg}", body


@pytest.mark.parametrize("name", list(GUIDANCE_META))
def test_a_value_inside_the_bounds_passes_everywhere(name, parser, server):
    meta = GUIDANCE_META[name]
    value = _good_value(name, meta)
    assert getattr(Guidance(**{name: value}), name) == value
    assert getattr(parser.parse_args([f"{knob_flag(name)}={value}"]), name) == value
    assert _post(server, "/knobs", {name: value}) == (200, {name: value})
    if meta["optional"]:  # none turns it off everywhere
        assert getattr(Guidance().replace(**{name: "none"}), name) is None
        assert parser.parse_args([knob_flag(name), "none"]).__dict__[name] == "none"
        assert _post(server, "/knobs", {name: "none"}) == (200, {name: "none"})


def test_the_server_keeps_its_own_range_beyond_the_knobs_bounds(parser, server):
    """Where a knob's server range is narrower (float32 must stay finite), the command line and the dataclass take
    the value and the server refuses it, naming its range."""
    checked = 0
    for name, meta in GUIDANCE_META.items():
        if meta["serve"] is None:
            continue
        lo, hi = meta["serve"]
        for v in (hi * 10 + 1, lo * 10 - 1):
            try:
                check_knob(name, v)
            except ModelError:
                continue  # outside the knob's own bounds too: covered above
            assert getattr(parser.parse_args([f"{knob_flag(name)}={v}"]), name) == v
            status, body = _post(server, "/knobs", {name: v})
            assert status == 400 and f"must be within [{lo:g}, {hi:g}] when served" in body["error"]["message"], body
            checked += 1
    assert checked >= 5


def test_guided_logits_and_guidance_agree_on_the_defaults():
    """guided_logits reads a Guidance: no defaults of its own to drift from the dataclass's."""
    import inspect

    from t3unlearn.t3.guidance import guided_logits

    params = inspect.signature(guided_logits).parameters
    assert not set(params) & set(GUIDANCE_META)
    with pytest.raises(TypeError, match="takes a Guidance"):
        guided_logits(None, None, 2.0)


RENAMED = [  # (command line with the old spelling, the same with the new one, the new option's name)
    (["toy", "--out", "o", "--no-progress"], ["toy", "--out", "o", "--quiet"], "--quiet"),
    (["eval", "--model", "m", "--out", "o", "--no-progress"], ["eval", "--model", "m", "--out", "o", "--quiet"], "--quiet"),
    (["eval", "--model", "m", "--out", "o", "--retain-results", "none"],
     ["eval", "--model", "m", "--out", "o", "--oracle-results", "none"], "--oracle-results"),
    (["probe", "--model", "m", "--out", "o", "--reference", "none", "--no-progress"],
     ["probe", "--model", "m", "--out", "o", "--oracle", "none", "--quiet"], "--oracle"),
    (["compare", "--retain-model", "r"], ["compare", "--oracle", "r"], "--oracle"),
    (["calibrate", "--head", "h", "--reference-model", "p"], ["calibrate", "--head", "h", "--pretrained", "p"], "--pretrained"),
    (["unlearn", "--reference-model", "p"], ["unlearn", "--pretrained", "p"], "--pretrained"),
    (["baseline", "npo", "--model", "m", "--retain", "r", "--out", "o", "--bf16"],
     ["baseline", "npo", "--model", "m", "--retain", "r", "--out", "o", "--mixed-precision", "bf16"], "--mixed-precision bf16"),
]


@pytest.mark.parametrize("old,new,name", RENAMED, ids=[r[0][0] + " " + r[2] for r in RENAMED])
def test_old_spellings_still_work_hidden_with_one_deprecation_line(old, new, name, capsys):
    from t3unlearn.commands.main import build_parser

    parser = build_parser()
    got, want = parser.parse_args(old), parser.parse_args(new)
    assert vars(got) == vars(want)
    lines = [x for x in capsys.readouterr().err.splitlines() if x]
    assert len(lines) == sum(a.startswith("--") and a not in new for a in old) and all(
        "is deprecated; use --" in x for x in lines), lines
    assert any(name in x for x in lines)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[old[0]]
    hidden = [a for a in old if a.startswith("--") and a not in new]
    assert not any(h in sub.format_help() for h in hidden)


def test_serve_takes_a_head_directory_alone(tmp_path):
    from t3unlearn.commands.main import build_parser

    args = build_parser().parse_args(["serve", "--model", "m", "--head", str(tmp_path / "forget10"), "--head", "f05=d"])
    assert args.head == [("forget10", str(tmp_path / "forget10")), ("f05", "d")]


def test_images_read_one_defaults_table_and_the_schemes_old_name(capsys):
    """The image side's T3 defaults come from one table (t3unlearn.images.guidance): the methods' defaults, the
    presets' per-family settings and the help agree with it; its diffusion scheme (once called "tempering", which
    means something else on the LLM side) is still read under the old name."""
    from t3unlearn.images.guidance import ImageGuidance, guidance_defaults
    from t3unlearn.images.methods import get_method, resolve_params
    from t3unlearn.images.presets import PRESETS

    for method in ("t3", "cg"):
        for family in ("ddpm", "vae"):
            _, params = PRESETS["default"].unlearn_settings(family, method)
            got = ImageGuidance.from_dict(resolve_params(get_method(method), params))
            assert vars(got) == guidance_defaults(method, family), (method, family)
    assert guidance_defaults("t3", "ddpm") != guidance_defaults("t3", "vae")
    assert guidance_defaults("cg", "vae")["temperature"] == 1.0
    # a saved head's guidance.json with the old name, and --set tempering=... (one deprecation line)
    assert ImageGuidance.from_dict({"tempering": "langevin"}).scheme == "langevin"
    capsys.readouterr()
    assert resolve_params(get_method("t3"), {"tempering": "score"})["scheme"] == "score"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tempering is now called scheme" in err[0]
