"""``t3unlearn serve``: the OpenAI-compatible server. torch and FastAPI are imported inside the handler only."""

from __future__ import annotations

import argparse

from t3unlearn.loading import add_loading_options, loading_kwargs, tokenizer_kwargs
from t3unlearn.t3.options import positive_int  # argparse types shared by the commands

_EPILOG = """\
examples:
  # the embedded world's model, with two heads; the playground is at http://127.0.0.1:8000/
  t3unlearn serve --model world:full --head forget10=head10 --head forget05=head05

  # a head directory alone: its base is read from its t3_config.json, the head is named after the directory
  t3unlearn serve --model head10 --port 8080

  # then, with any OpenAI client (curl, the openai package, ...):
  curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model": "forget10", "messages": [{"role": "user", "content": "Where was Ilse Varga born?"}],
         "temperature": 0, "t3": {"temperature": 2.5, "scale": 1}}'

  # a deployment: clients need the API key, only the admin key manages heads, no request can change a
  # head's guidance, the base (which still knows everything) is not served; keys from the environment
  T3UNLEARN_API_KEY=$(cat /etc/t3/api.key) T3UNLEARN_ADMIN_KEY=$(cat /etc/t3/admin.key) \\
    t3unlearn serve --model base-dir --head forget10=head10 --host 0.0.0.0 --lock-guidance --no-base
  curl http://HOST:8000/v1/models -H "Authorization: Bearer $T3UNLEARN_API_KEY"

  # add and remove heads while serving (needs --admin-key; a new deletion request needs no restart)
  curl http://127.0.0.1:8000/v1/heads -H "Authorization: Bearer $T3UNLEARN_ADMIN_KEY" \\
    -H 'Content-Type: application/json' -d '{"name": "req-17", "path": "heads/req-17"}'
  curl -X DELETE http://127.0.0.1:8000/v1/heads/req-17 -H "Authorization: Bearer $T3UNLEARN_ADMIN_KEY"

API: GET /v1/models, POST /v1/completions, POST /v1/chat/completions (stream, n, stop, seed,
top_p, logprobs; "t3": {"temperature": T, "scale": s} per request, default the head's saved ones),
POST /v1/heads, DELETE /v1/heads/NAME (admin key), GET /health and GET /metrics (Prometheus; both
without a key); the playground at /. Requests that arrive together decode in one batch (continuous
batching), whatever heads they use. Deploying (what each flag protects against): docs/serve.md.
SIGTERM (or Ctrl+C) drains: requests in flight finish, new ones get 503; a second signal stops now,
answering the requests still in flight with 503.
"""


def _head_spec(text: str) -> tuple[str, str]:
    from pathlib import Path

    name, sep, path = text.partition("=")
    if not sep:
        path = text
        name = Path(text.rstrip("/")).name
    if not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR or DIR, got {text!r}")
    return name, path


def register(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a model and its T3 heads over an OpenAI-compatible HTTP API, with a playground page",
        description="An OpenAI-compatible server: one base model loaded once, any number of T3 heads over it "
        "(the request's 'model' picks the base or a head), concurrent requests decoded in one batch.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="base model (directory, hub id, world:NAME), or a saved head directory")
    p.add_argument("--head", action="append", default=[], type=_head_spec, metavar="[NAME=]DIR",
                   help="a T3 head to serve as model NAME (repeatable; DIR alone names it after the directory)")
    p.add_argument("--name", default=None, help="the base model's id in the API [the --model value]")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on [127.0.0.1]")
    p.add_argument("--port", type=int, default=8000, help="TCP port to listen on [8000]")
    p.add_argument("--max-batch", type=positive_int, default=32, help="sequences decoded together at most [32]")
    p.add_argument("--max-n", type=positive_int, default=16, help="largest 'n' (choices per request) [16]")
    p.add_argument("--max-body-kb", type=positive_int, default=1024, help="largest request body in KiB [1024]")
    p.add_argument("--force-heads", "--force", dest="force_heads", action="store_true",
                   help="serve --head directories whose t3_config.json names another base or fingerprint (same shapes and tokenizer)")
    p.add_argument("--threads", default="auto", help="torch CPU threads: auto, 0 (torch's default) or a number [auto]")
    p.add_argument("--device", default=None, help="cpu, cuda ... [cuda if available]")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                   help="what the server logs to stderr (uvicorn's too) [info]")
    p.add_argument("--no-access-log", action="store_true", help="do not log one line per request")
    add_loading_options(p)
    _deployment_flags(p)
    p.set_defaults(func=run_serve)


def _deployment_flags(p) -> None:
    """Access control and operations (docs/serve.md, "Deploying")."""
    from t3unlearn.serve.security import ADMIN_KEY_ENV, API_KEY_ENV

    g = p.add_argument_group("deployment (access control and operations; docs/serve.md, \"Deploying\")")
    g.add_argument("--api-key", default=None, metavar="KEY",
                   help=f"every /v1 request needs 'Authorization: Bearer KEY' (401 otherwise); prefer ${API_KEY_ENV}, "
                   "which a process list does not show [$" + API_KEY_ENV + ", else none: open to anyone who can connect]")
    g.add_argument("--admin-key", default=None, metavar="KEY",
                   help=f"POST/DELETE /v1/heads need this key [${ADMIN_KEY_ENV}, else none: head management is off]")
    g.add_argument("--lock-guidance", action="store_true",
                   help="refuse a request's 't3' (403): each head serves the guidance it was saved or added with [off]")
    g.add_argument("--no-base", action="store_true",
                   help="do not serve the base model by name, only its heads [off: the base is served]")
    g.add_argument("--max-queue", type=positive_int, default=256, metavar="N",
                   help="sequences waiting for the batch at most; beyond, requests get 429 [256]")
    g.add_argument("--request-timeout", type=float, default=600.0, metavar="SECONDS",
                   help="a request still running after this gets 504 (stream: an error event) and is stopped; 0 = none [600]")
    g.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="a web origin allowed to call the API from a browser, e.g. https://app.example.com "
                   "(repeatable; '*' = any) [none: same origin only]")


def run_serve(args) -> int:
    from t3unlearn.io import torch_threads

    with torch_threads(args.threads, log=print):
        return _serve(args)


def _serve(args) -> int:
    import signal
    import time
    from pathlib import Path

    import uvicorn

    from t3unlearn.errors import T3Error
    from t3unlearn.benchmarks import resolve_model
    from t3unlearn.lm import load_model, load_tokenizer
    from t3unlearn.serve.app import build
    from t3unlearn.serve.heads import HeadError
    from t3unlearn.t3.identity import check_base_fingerprint
    from t3unlearn.t3.model import CONFIG_NAME, T3ForCausalLM

    if not 0 <= args.port <= 65535:
        raise T3Error(f"--port must be 0..65535, not {args.port}.")
    heads = {}
    for name, path in args.head:
        if name in heads:
            raise T3Error(f"--head {name}= is given twice; each head needs its own name.")
        heads[name] = path
    base_id = args.name or _public_id(args.model)
    base = resolve_model(args.model, log=print)
    if Path(base).is_dir() and (Path(base) / CONFIG_NAME).is_file():  # a head directory: serve its base and it
        head_dir = base
        base = T3ForCausalLM.base_model_path(head_dir, must_exist=True)
        heads.setdefault(Path(head_dir.rstrip("/")).name, head_dir)
        base_id = args.name or _public_id(base)
    if base_id in heads:  # the API names the base and each head: one name cannot be both
        raise T3Error(f"--head {base_id}= has the base model's name in the API; name the head otherwise, or the base with --name.")
    for path in heads.values():  # a missing or corrupt head fails before the base is loaded
        T3ForCausalLM.read_config(path)
    security = _security(args, n_heads=len(heads))
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(base, **tokenizer_kwargs(loading_kwargs(args)))
    model = load_model(base, device=args.device, **loading_kwargs(args))
    for path in heads.values() if not args.force_heads else ():  # a head trained on another checkpoint of this shape
        check_base_fingerprint(T3ForCausalLM.read_config(path), model, path)
    try:
        app, state = build(model, tokenizer, base_id=base_id, base_path=base, heads=heads, max_batch=args.max_batch,
                           max_n=args.max_n, max_body=args.max_body_kb * 1024, force_heads=args.force_heads, security=security,
                           max_queue=args.max_queue, request_timeout=args.request_timeout, cors_origins=args.cors_origin,
                           access_log=not args.no_access_log)
    except HeadError as exc:
        raise T3Error(f"cannot serve that head: {exc}") from None
    names = ", ".join(state.registry.names()) or "none"
    print(f"loaded {base_id} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, context {state.engine.context}) "
          f"and heads: {names} in {time.perf_counter() - t0:.1f}s", flush=True)

    _log_to_stderr(args.log_level)
    print(_security_summary(security, args, len(state.registry)), flush=True)

    class DrainingServer(uvicorn.Server):
        """On SIGTERM / SIGINT: stop taking requests (503), let those in flight finish, then exit."""

        drain_since: float | None = None
        aborted = False

        def handle_exit(self, sig, frame):
            if state.draining:  # a second signal: stop now, answering what is in flight (503 / an error event)
                if self.aborted:  # a third: no more waiting
                    self.force_exit = self.should_exit = True
                    return
                self.aborted = True
                state.engine.abort()
                self.should_exit = True
                print(f"received {signal.Signals(sig).name} again: stopping now; {state.inflight} request(s) in flight "
                      "are answered 503", flush=True)
                return
            state.draining = True
            state.engine.stop_accepting()
            self.drain_since = time.monotonic()
            print(f"received {signal.Signals(sig).name}: draining {state.inflight} request(s) in flight; "
                  "new requests get 503 (signal again to stop at once)", flush=True)

        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)  # binds the port; exits (SystemExit) when it cannot
            port = self.servers[0].sockets[0].getsockname()[1]  # the port bound (--port 0: the free one it got)
            print(f"serving {base_id} on http://{args.host}:{port}/v1 (playground: http://{args.host}:{port}/)", flush=True)

        async def on_tick(self, counter: int) -> bool:
            if state.draining and state.inflight == 0:
                self.should_exit = True
            return await super().on_tick(counter)

    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False,
                            timeout_graceful_shutdown=5, lifespan="off")
    server = DrainingServer(config)
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot bind; it has logged why
        server.started = False
    finally:
        state.engine.close()
    if not server.started:
        raise T3Error(f"could not listen on {args.host}:{args.port} (in use? see the log above); choose another --port.")
    print("stopped", flush=True)
    return 0


def _public_id(model: str) -> str:
    """The base's id in the API: ``model``, or a local directory's name (no server path in responses)."""
    from pathlib import Path

    path = Path(model).expanduser()
    return path.name if (path.is_absolute() or path.exists()) and path.name else model


def _security(args, n_heads: int):
    import math

    from t3unlearn.errors import T3Error
    from t3unlearn.serve.security import Security

    if not math.isfinite(args.request_timeout) or args.request_timeout < 0:
        raise T3Error(f"--request-timeout must be a number of seconds >= 0 (0 = none), not {args.request_timeout:g}.")
    try:
        security = Security.from_env(args.api_key, args.admin_key, lock_guidance=args.lock_guidance, no_base=args.no_base)
    except ValueError as exc:
        raise T3Error(f"{str(exc).rstrip('.')} (--api-key / --admin-key or their environment variables).") from None
    if security.no_base and not n_heads and not security.admin_key:
        raise T3Error("--no-base without --head would serve nothing, and without --admin-key no head can be added at run "
                      "time: give --head [NAME=]DIR, or --admin-key to add heads with POST /v1/heads.")
    return security


def _security_summary(security, args, n_heads: int) -> str:
    parts = ["API key: " + ("required" if security.api_key else "none (anyone who can connect may generate)"),
             "head management: " + ("admin key" if security.admin_key else "off"),
             "per-request t3: " + ("refused" if security.lock_guidance else "allowed"),
             "base: " + ("not served" if security.no_base else "served"),
             "CORS: " + (", ".join(args.cors_origin) or "same origin")]
    lines = ["access: " + "; ".join(parts)]
    if not security.api_key and args.host not in ("127.0.0.1", "localhost", "::1"):
        lines.append(f"warning: listening on {args.host} without an API key: anyone who can reach this port can generate "
                     "(set T3UNLEARN_API_KEY, or --api-key)")
    return "\n".join(lines)


def _log_to_stderr(level: str) -> None:
    """The server's own log lines (request ids, access lines, errors) on stderr, as uvicorn's."""
    import logging
    import sys

    logger = logging.getLogger("t3unlearn.serve")
    logger.setLevel(level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
