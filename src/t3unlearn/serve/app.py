"""The OpenAI-compatible HTTP API (FastAPI): completions, chat, models, heads, health, playground.

Requests are validated by pydantic models (unknown fields are refused, types are strict); every
error is an OpenAI-style object ``{"error": {"message", "type", "param", "code"}}`` naming the field
at fault. Generation runs in :class:`t3unlearn.serve.engine.Engine` (one thread, continuous
batching); each request gets an asyncio queue the engine posts its tokens to.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from importlib import resources
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from t3unlearn.serve.engine import Engine, EngineFull, EngineStopped, Sequence
from t3unlearn.errors import ModelError
from t3unlearn.serve.heads import HeadError, HeadRegistry, guidance_dict

log = logging.getLogger("t3unlearn.serve")

MAX_PROMPTS = 64  # prompts in one completions request
MAX_STOP = 4  # stop strings, as OpenAI


# --------------------------------------------------------------------------- errors


class APIError(Exception):
    """An error answered as an OpenAI error object."""

    def __init__(self, status: int, message: str, *, param: str | None = None, type: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")


def error_body(message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(status: int, message: str, *, param: str | None = None, type: str | None = None, code: str | None = None) -> JSONResponse:
    type = type or ("invalid_request_error" if status < 500 else "server_error")
    return JSONResponse(error_body(message, type=type, param=param, code=code), status_code=status)


_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def _param_of(loc) -> str | None:
    """``('body', 'messages', 0, 'content', 'str')`` -> ``messages[0].content``."""
    out = ""
    for part in list(loc)[1:] if loc and loc[0] == "body" else list(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in part or "-" in part or part in _UNION_TAGS or part[:1].isupper():
            break  # a union member's tag, not a field
        else:
            out += ("." if out else "") + part
    return out or None


def validation_error_response(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"type": "", "loc": (), "msg": "invalid request"}
    kind = first.get("type", "")
    if kind == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "")
        pos = first["loc"][1] if len(first.get("loc", ())) > 1 else "?"
        return error_response(400, f"the request body is not valid JSON ({detail} at character {pos}).", code="invalid_json")
    param = _param_of(first.get("loc", ()))
    if param is None:
        if kind == "missing":
            return error_response(400, "the request body is missing; send a JSON object (Content-Type: application/json).")
        return error_response(400, "the request body must be a JSON object (Content-Type: application/json).")
    if kind == "extra_forbidden":
        return error_response(400, f"unsupported parameter '{param}'; this server does not implement it.", param=param,
                              code="unsupported_parameter")
    if kind == "missing":
        return error_response(400, f"missing required parameter '{param}'.", param=param)
    msgs = []
    for e in errors:
        if _param_of(e.get("loc", ())) == param:
            m = str(e.get("msg", "")).removeprefix("Value error, ")
            if m not in msgs:
                msgs.append(m)
    return error_response(400, f"invalid '{param}': {'; or '.join(msgs)}"[:500], param=param)


# --------------------------------------------------------------------------- request schemas


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class T3Knobs(_Strict):
    """T3's own knobs (:class:`t3unlearn.t3.config.Guidance`); each defaults to the head's saved value."""

    temperature: float | None = Field(None, gt=0, description="T: tempering of the base (> 0; 1 = plain guidance)")
    scale: float | None = Field(None, description="s: guidance scale (0 = no tilt)")
    tempering: Literal["global", "adaptive"] | None = None
    tail_logp: float | None = Field(None, lt=0, description="tokens below this base log-prob are not lifted by tempering")
    bias: float | None = Field(None, description="added to the head's logits")
    support: float | None = Field(None, gt=0, le=1, description="guidance fades beyond this quantile of the head's "
                                  "training-state distances (needs a head with a support gate)")
    floor: float | None = Field(None, lt=0, description="head logits below this count as this: no token loses more than "
                                "s x log(1 + e^-floor) nats to the tilt")

    def changes(self) -> dict:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class StreamOptions(_Strict):
    include_usage: bool = False


class _Sampling(_Strict):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    ignore_eos: bool = False  # vLLM's extension: keep going past EOS (benchmarks)
    t3: T3Knobs | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        items = [v] if isinstance(v, str) else list(v or [])
        if len(items) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings")
        if any(not x for x in items):
            raise ValueError("stop strings must not be empty")
        return v

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _penalty(cls, v):
        if v not in (None, 0, 0.0):
            raise ValueError("penalties are not supported (only 0)")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, v):
        if v:
            raise ValueError("logit_bias is not supported")
        return v


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    @field_validator("echo")
    @classmethod
    def _echo(cls, v):
        if v:
            raise ValueError("echo is not supported")
        return v

    @field_validator("best_of")
    @classmethod
    def _best_of(cls, v):
        if v not in (None, 1):
            raise ValueError("best_of is not supported (only 1)")
        return v

    @field_validator("suffix")
    @classmethod
    def _suffix(cls, v):
        if v:
            raise ValueError("suffix (insertion) is not supported")
        return v


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


class HeadRequest(_Strict):
    name: str
    path: str
    temperature: float | None = Field(None, gt=0)
    scale: float | None = None
    tempering: Literal["global", "adaptive"] | None = None
    tail_logp: float | None = Field(None, lt=0)
    bias: float | None = None
    support: float | None = Field(None, gt=0, le=1)
    floor: float | None = Field(None, lt=0)
    force: bool = False


def chat_prompt_ids(tokenizer, formatter, messages: list[ChatMessage]) -> list[int]:
    """Token ids of a chat prompt: the tokenizer's chat template when it has one (``formatter.use_chat``;
    without a system message, the formatter's, as in training and evaluation), else the project's plain
    template, earlier turns as ``Question: ...\nAnswer: ...`` lines. One user message gives exactly
    ``formatter.prompt_ids(question)``."""
    if messages[-1].role != "user":
        raise APIError(400, "the last message must be the user's (the model answers it).", param=f"messages[{len(messages) - 1}].role")
    if formatter.use_chat:
        convo = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in messages]
        system = getattr(formatter, "system_prompt", None)
        if system and convo[0]["role"] != "system":  # the system message heads are trained and evaluated with
            convo.insert(0, {"role": "system", "content": system})
        date = getattr(formatter, "date_string", None)
        try:
            text = tokenizer.apply_chat_template(convo, add_generation_prompt=True, tokenize=False,
                                                 **({"date_string": date} if date is not None else {}))
        except Exception as exc:  # noqa: BLE001 - a template may reject a conversation shape
            raise APIError(400, f"the model's chat template refused these messages: {exc}"[:300], param="messages") from None
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if len(messages) == 1:
        return formatter.prompt_ids(messages[0].text())  # exactly the prompt of training and evaluation
    parts, pending = [], None
    for m in messages[:-1]:
        if m.role in ("system", "developer"):
            parts.append(m.text().strip() + "\n")
        elif m.role == "user":
            if pending is not None:  # two user turns in a row: the first one unanswered
                parts.append(f"Question: {pending}\n")
            pending = m.text()
        else:
            parts.append(f"Question: {pending or ''}\nAnswer: {m.text().strip()}\n")
            pending = None
    if pending is not None:
        parts.append(f"Question: {pending}\n")
    text = "".join(parts) + formatter.prompt_text(messages[-1].text())
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


# --------------------------------------------------------------------------- the app


class ServeState:
    """What the app serves: the engine, the heads, the tokenizer, limits, and the drain flag."""

    def __init__(self, engine: Engine, registry: HeadRegistry, tokenizer, *, max_n: int = 16, max_body: int = 1 << 20,
                 base_path: str | None = None):
        from t3unlearn.data import QAFormatter

        self.engine, self.registry, self.tokenizer = engine, registry, tokenizer
        self.formatter = QAFormatter(tokenizer, max_length=engine.context)
        self.max_n, self.max_body = int(max_n), int(max_body)
        self.base_path = base_path
        self.draining = False
        self.inflight = 0
        self.started = time.time()


class GuardMiddleware:
    """Pure ASGI: counts requests in flight, answers 503 while draining, and refuses bodies over
    ``max_body`` bytes with 413 before the app reads them (the body is read once and replayed)."""

    def __init__(self, app, state: ServeState):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        st = self.state
        if st.draining:
            return await error_response(503, "the server is shutting down; retry on another replica.", type="server_error",
                                        code="shutting_down")(scope, receive, send)
        st.inflight += 1
        try:
            declared = dict(scope.get("headers") or []).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > st.max_body:
                return await self._too_large(scope, receive, send)
            if scope.get("method") in ("POST", "PUT", "PATCH"):
                chunks, size, more = [], 0, True
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunks.append(message.get("body", b""))
                    size += len(chunks[-1])
                    more = message.get("more_body", False)
                    if size > st.max_body:
                        return await self._too_large(scope, receive, send)
                body, replayed = b"".join(chunks), False

                async def replay():
                    nonlocal replayed
                    if not replayed:
                        replayed = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()

                return await self.app(scope, replay, send)
            return await self.app(scope, receive, send)
        finally:
            st.inflight -= 1

    async def _too_large(self, scope, receive, send):
        resp = error_response(413, f"the request body is over {self.state.max_body} bytes; send a smaller request.",
                              code="request_too_large")
        await resp(scope, receive, send)


def _now() -> int:
    return int(time.time())


def create_app(state: ServeState) -> FastAPI:
    """The FastAPI app over ``state`` (the engine must be started by the caller)."""
    app = FastAPI(title="t3unlearn serve", version="1", docs_url="/docs", redoc_url=None)
    app.state.serve = state
    registry, engine, tok = state.registry, state.engine, state.tokenizer

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc):
        return validation_error_response(exc)

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        return error_response(exc.status, exc.message, param=exc.param, type=exc.type, code=exc.code)

    @app.exception_handler(HeadError)
    async def _head_error(request, exc: HeadError):
        code = {404: "model_not_found", 409: "conflict"}.get(exc.status, "invalid_head")
        return error_response(exc.status, str(exc), param=exc.param, code=code)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        message = {404: f"no such endpoint: {request.method} {request.url.path}",
                   405: f"method {request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return error_response(exc.status_code, message, code="not_found" if exc.status_code == 404 else None)

    @app.exception_handler(Exception)
    async def _internal(request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}"[:300])

    # ------------------------------------------------------------------ models and heads
    def base_card() -> dict:
        return {"id": registry.base_id, "object": "model", "created": registry.created, "owned_by": "t3unlearn",
                "root": state.base_path or registry.base_id, "parent": None, "max_model_len": engine.context, "t3": None}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [base_card()] + [h.card(registry.base_id) for h in registry.heads()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str):
        head = registry.resolve(model_id)
        return base_card() if head is None else head.card(registry.base_id)

    @app.post("/v1/heads", status_code=201)
    async def add_head(req: HeadRequest):
        guidance = {k: getattr(req, k) for k in ("temperature", "scale", "tempering", "tail_logp", "bias", "support", "floor")}
        head = await run_in_threadpool(registry.add, req.name, req.path, force=req.force, **guidance)
        log.info("head %s added from %s (T=%g, s=%g)", head.name, head.path, head.temperature, head.scale)
        return head.card(registry.base_id)

    @app.delete("/v1/heads/{name:path}")
    async def delete_head(name: str):
        head = registry.remove(name)
        log.info("head %s removed", head.name)
        return {"id": head.name, "object": "model", "deleted": True}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": registry.base_id, "heads": len(registry), **engine.stats(),
                "uptime_s": round(time.time() - state.started, 1)}

    # ------------------------------------------------------------------ the playground
    @app.get("/", response_class=HTMLResponse)
    async def playground():
        return HTMLResponse(resources.files("t3unlearn.serve").joinpath("static").joinpath("playground.html").read_text(encoding="utf-8"))

    @app.get("/static/{name}")
    async def static(name: str):
        types = {".js": "text/javascript", ".css": "text/css"}
        kind = next((t for ext, t in types.items() if name.endswith(ext)), None)
        f = resources.files("t3unlearn.serve").joinpath("static").joinpath(name)
        if kind is None or "/" in name or not f.is_file():
            raise APIError(404, f"no such file: /static/{name}", code="not_found")
        return Response(f.read_text(encoding="utf-8"), media_type=kind)

    # ------------------------------------------------------------------ generation
    def knobs(req: _Sampling, head):
        """The guidance of a request: the head's saved one, with the request's ``t3`` changes (None for the base)."""
        changes = req.t3.changes() if req.t3 is not None else {}
        if head is None:
            if changes:
                raise APIError(400, f"'t3' sets a head's guidance (T, s, ...), but '{registry.base_id}' is the base model; "
                               "pick a head as 'model'.", param="t3")
            return None
        try:
            return head.guidance.replace(**changes)
        except ModelError as exc:
            raise APIError(400, str(exc), param="t3") from None

    def max_tokens_for(req: _Sampling, prompts: list[list[int]], default: int | None, field: str, requested: int | None) -> int:
        longest = max(len(p) for p in prompts)
        room = engine.context - longest
        if room < 1:
            raise APIError(400, f"the prompt is {longest} tokens; this model's context is {engine.context} tokens, "
                           "which leaves no room to generate. Shorten the prompt.", param="prompt" if field == "max_tokens" else "messages",
                           code="context_length_exceeded")
        if requested is None:
            return room if default is None else min(default, room)
        if requested > room:
            raise APIError(400, f"{field}={requested} is over the context: the prompt is {longest} tokens and the context "
                           f"{engine.context}, so at most {room} new tokens fit.", param=field, code="context_length_exceeded")
        return requested

    def make_sequences(req: _Sampling, head, prompts: list[list[int]], max_tokens: int, logprobs: int | None, queue, loop) -> list[Sequence]:
        if req.n > state.max_n:
            raise APIError(400, f"n={req.n} is over this server's limit of {state.max_n} choices per request.", param="n")
        if len(prompts) * req.n > state.max_n * 4:
            raise APIError(400, f"{len(prompts)} prompts x n={req.n} is over {state.max_n * 4} sequences per request.", param="n")
        guidance = knobs(req, head)
        temp = 1.0 if req.temperature is None else float(req.temperature)
        top_p = 1.0 if req.top_p is None else float(req.top_p)
        stop = tuple([req.stop] if isinstance(req.stop, str) else (req.stop or []))

        def emit(seq, delta, tokens, reason):
            loop.call_soon_threadsafe(queue.put_nowait, (seq, delta, tokens, reason))

        seqs = []
        for p in prompts:
            for _ in range(req.n):
                seed = None if req.seed is None else (req.seed + len(seqs)) % (1 << 63)
                seqs.append(Sequence(p, head, guidance, max_tokens=max_tokens, sampling_temperature=temp, top_p=top_p,
                                     stop=stop, ignore_eos=req.ignore_eos, logprobs=logprobs, seed=seed, stream=req.stream, emit=emit))
        return seqs

    def submit(seqs):
        try:
            engine.submit(seqs)
        except EngineStopped:
            raise APIError(503, "the server is shutting down; retry on another replica.", code="shutting_down") from None
        except EngineFull as exc:
            raise APIError(503, f"the server is overloaded ({exc}); retry later.", code="overloaded") from None

    def usage(prompts, seqs) -> dict:
        prompt_tokens = sum(len(p) for p in prompts)
        completion_tokens = sum(len(s.out_ids) for s in seqs)
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}

    async def collect(request: Request, seqs, queue) -> dict[int, list]:
        """Wait for every sequence to finish (cancelling them if the client goes away)."""
        infos: dict[int, list] = {id(s): [] for s in seqs}
        left = len(seqs)
        try:
            while left:
                try:
                    seq, _delta, tokens, reason = await asyncio.wait_for(queue.get(), timeout=1.0)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        engine.cancel(seqs)
                        raise APIError(499, "client closed the request") from None
                    continue
                infos[id(seq)].extend(tokens)
                if reason is not None:
                    left -= 1
        except BaseException:
            engine.cancel([s for s in seqs if s.finish_reason is None])
            raise
        failed = [s for s in seqs if s.finish_reason == "error"]
        if failed:
            raise APIError(500, failed[0].error or "generation failed", code="generation_failed")
        return infos

    def t3_info(head, seqs) -> dict | None:
        if head is None:
            return None
        return {"head": head.name, **guidance_dict(seqs[0].guidance)}

    def completion_logprobs(tokens, offset: int = 0) -> dict:
        offsets, pos = [], offset
        for t in tokens:
            offsets.append(pos)
            pos += len(t.text)
        return {"tokens": [t.text for t in tokens], "token_logprobs": [t.logprob for t in tokens],
                "top_logprobs": [dict(t.top) for t in tokens], "text_offset": offsets}

    def chat_logprobs(tokens) -> dict:
        def item(text, lp):
            return {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))}

        return {"content": [{**item(t.text, t.logprob), "top_logprobs": [item(a, b) for a, b in t.top]} for t in tokens]}

    def sse(obj) -> str:
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    async def stream_events(seqs, queue, prompts, head, make_chunk, include_usage: bool, first_chunks=()):
        index = {id(s): i for i, s in enumerate(seqs)}
        left = len(seqs)
        try:
            for chunk in first_chunks:
                yield sse(chunk)
            while left:
                seq, delta, tokens, reason = await queue.get()
                if reason == "error":
                    yield sse(error_body(seq.error or "generation failed", type="server_error", code="generation_failed"))
                    break
                if reason is not None:
                    left -= 1
                if delta or tokens or reason is not None:
                    yield sse(make_chunk(index[id(seq)], delta, tokens, None if reason == "cancelled" else reason))
            if include_usage and not left:
                yield sse(make_chunk(None, None, None, None, usage=usage(prompts, seqs)))
            yield "data: [DONE]\n\n"
        finally:
            engine.cancel([s for s in seqs if s.finish_reason is None])

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request):
        head = registry.resolve(req.model)
        prompts = encode_prompts(req.prompt)
        max_tokens = max_tokens_for(req, prompts, 16, "max_tokens", req.max_tokens)
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()
        seqs = make_sequences(req, head, prompts, max_tokens, req.logprobs, queue, loop)
        rid, created = f"cmpl-{uuid.uuid4().hex}", _now()
        submit(seqs)
        if req.stream:
            offsets = {}

            def chunk(i, delta, tokens, reason, usage=None):
                body = {"id": rid, "object": "text_completion", "created": created, "model": req.model, "choices": []}
                if usage is not None:
                    body["usage"] = usage
                    return body
                lp = None
                if req.logprobs is not None:
                    lp = completion_logprobs(tokens, offsets.get(i, 0))
                    offsets[i] = offsets.get(i, 0) + sum(len(t.text) for t in tokens)
                body["choices"] = [{"index": i, "text": delta, "logprobs": lp, "finish_reason": reason}]
                return body

            include = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(stream_events(seqs, queue, prompts, head, chunk, include), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        infos = await collect(request, seqs, queue)
        choices = [{"index": i, "text": s.text, "finish_reason": s.finish_reason,
                    "logprobs": completion_logprobs(infos[id(s)]) if req.logprobs is not None else None} for i, s in enumerate(seqs)]
        return {"id": rid, "object": "text_completion", "created": created, "model": req.model, "system_fingerprint": None,
                "choices": choices, "usage": usage(prompts, seqs), "t3": t3_info(head, seqs)}

    def encode_prompts(prompt) -> list[list[int]]:
        if isinstance(prompt, str):
            items: list = [prompt]
        elif prompt and all(isinstance(x, int) for x in prompt):
            items = [list(prompt)]
        else:
            items = list(prompt)
        if not items:
            raise APIError(400, "'prompt' is empty; give a string, a list of strings or of token ids.", param="prompt")
        if len(items) > MAX_PROMPTS:
            raise APIError(400, f"{len(items)} prompts in one request; at most {MAX_PROMPTS}.", param="prompt")
        out = []
        for x in items:
            ids = list(tok(x, add_special_tokens=True)["input_ids"]) if isinstance(x, str) else list(x)
            if not ids:
                raise APIError(400, "a prompt is empty (no tokens); give some text.", param="prompt")
            bad = [t for t in ids if not 0 <= t < engine.vocab_size]
            if bad:
                raise APIError(400, f"token id {bad[0]} is outside this model's vocabulary (0..{engine.vocab_size - 1}).", param="prompt")
            out.append(ids)
        return out

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, request: Request):
        head = registry.resolve(req.model)
        if req.top_logprobs is not None and not req.logprobs:
            raise APIError(400, "'top_logprobs' needs 'logprobs': true.", param="top_logprobs")
        if req.max_tokens is not None and req.max_completion_tokens is not None and req.max_tokens != req.max_completion_tokens:
            raise APIError(400, "give 'max_completion_tokens' or 'max_tokens', not two different values.", param="max_tokens")
        prompts = [chat_prompt_ids(tok, state.formatter, req.messages)]
        requested = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        field = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
        max_tokens = max_tokens_for(req, prompts, None, field, requested)
        logprobs = (req.top_logprobs or 0) if req.logprobs else None
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()
        seqs = make_sequences(req, head, prompts, max_tokens, logprobs, queue, loop)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", _now()
        submit(seqs)
        if req.stream:
            def chunk(i, delta, tokens, reason, usage=None):
                body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": req.model, "choices": []}
                if usage is not None:
                    body["usage"] = usage
                    return body
                d = {"content": delta} if delta or reason is None else {}
                lp = chat_logprobs(tokens) if logprobs is not None and tokens else None
                body["choices"] = [{"index": i, "delta": d, "logprobs": lp, "finish_reason": reason}]
                return body

            first = [{"id": rid, "object": "chat.completion.chunk", "created": created, "model": req.model,
                      "choices": [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]}
                     for i in range(len(seqs))]
            include = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(stream_events(seqs, queue, prompts, head, chunk, include, first), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        infos = await collect(request, seqs, queue)
        choices = [{"index": i, "message": {"role": "assistant", "content": s.text}, "finish_reason": s.finish_reason,
                    "logprobs": chat_logprobs(infos[id(s)]) if logprobs is not None else None} for i, s in enumerate(seqs)]
        return {"id": rid, "object": "chat.completion", "created": created, "model": req.model, "system_fingerprint": None,
                "choices": choices, "usage": usage(prompts, seqs), "t3": t3_info(head, seqs)}

    return GuardMiddleware(app, state)


def build(model, tokenizer, *, base_id: str, base_path: str | None = None, heads: dict[str, str] | None = None,
          max_batch: int = 32, max_n: int = 16, max_body: int = 1 << 20, force_heads: bool = False):
    """An app ready to serve ``model`` with ``heads`` (name -> directory): ``(asgi_app, state)``; the
    engine is started. Raises :class:`HeadError` for a head that cannot be served."""
    from t3unlearn.t3.features import hidden_size_of, vocab_size_of
    from t3unlearn.t3.model import tokenizer_hash

    registry = HeadRegistry(base_id, hidden_size=hidden_size_of(model), vocab_size=vocab_size_of(model),
                            tokenizer_hash=tokenizer_hash(tokenizer), base_path=base_path, device=next(model.parameters()).device)
    for name, path in (heads or {}).items():
        registry.add(name, path, force=force_heads)
    engine = Engine(model, tokenizer, max_batch=max_batch)
    state = ServeState(engine, registry, tokenizer, max_n=max_n, max_body=max_body, base_path=base_path)
    app = create_app(state)
    engine.start()
    return app, state
