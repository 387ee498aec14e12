"""The OpenAI-compatible HTTP API (FastAPI): completions, chat, models, heads, health, metrics, playground.

Requests are validated by pydantic models (:mod:`~t3unlearn.serve.schemas`: unknown fields are refused,
types are strict, every number that reaches the math is bounded); every error is an OpenAI-style object
``{"error": {"message", "type", "param", "code"}}`` naming the field at fault, with no exception text or
path in it. Generation runs in :class:`t3unlearn.serve.engine.Engine` (one thread, continuous batching);
the endpoints are in :mod:`~t3unlearn.serve.generate`. Access control (API key, admin key, locked
guidance, no base) is :mod:`~t3unlearn.serve.security`; request ids, metrics and the body limit are the
outermost layer, :class:`~t3unlearn.serve.middleware.GuardMiddleware`.
"""

from __future__ import annotations

import logging
import time
from importlib import resources

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from t3unlearn.serve.engine import Engine
from t3unlearn.serve.errors import APIError, error_body, error_response, redact_paths, validation_error_response  # noqa: F401
from t3unlearn.serve.generate import Generation
from t3unlearn.serve.heads import HeadError, HeadRegistry
from t3unlearn.serve.metrics import Metrics
from t3unlearn.serve.middleware import REQUEST_ID, GuardMiddleware
from t3unlearn.serve.schemas import (  # noqa: F401 - the request schemas, importable from here as before
    ChatMessage, ChatRequest, CompletionRequest, HeadRequest, T3Knobs, chat_prompt_ids)
from t3unlearn.serve.security import Security, admin_key_dependency, api_key_dependency

log = logging.getLogger("t3unlearn.serve")

__all__ = ["APIError", "ChatMessage", "ChatRequest", "CompletionRequest", "HeadRequest", "ServeState", "T3Knobs", "build",
           "chat_prompt_ids", "create_app", "error_body", "error_response", "validation_error_response"]


class ServeState:
    """What the app serves: the engine, the heads, the tokenizer, limits, access control, metrics and the drain flag."""

    def __init__(self, engine: Engine, registry: HeadRegistry, tokenizer, *, max_n: int = 16, max_body: int = 1 << 20,
                 base_path: str | None = None, security: Security | None = None, request_timeout: float | None = None):
        from t3unlearn.data import QAFormatter

        self.engine, self.registry, self.tokenizer = engine, registry, tokenizer
        self.formatter = QAFormatter(tokenizer, max_length=engine.context)
        self.max_n, self.max_body = int(max_n), int(max_body)
        self.base_path = base_path
        self.security = security or Security()
        self.request_timeout = request_timeout or None
        self.metrics = Metrics(engine)
        self.draining = False
        self.inflight = 0
        self.started = time.time()

    def resolve(self, model: str, request: Request | None = None):
        """The head ``model`` names (None for the base); 404 for an unknown name, and for the base under
        ``--no-base``. Records the name for the metrics."""
        registry = self.registry
        if self.security.no_base:
            head = registry.heads_by_name().get(model)
            if head is None:
                raise HeadError(f"the model {model!r} does not exist; this server serves: {', '.join(registry.names()) or 'none yet'} "
                                "(GET /v1/models lists them).", param="model", status=404)
        else:
            head = registry.resolve(model)
        if request is not None:
            request.state.model = model
        return head

    def base_card(self) -> dict:
        r = self.registry
        return {"id": r.base_id, "object": "model", "created": r.created, "owned_by": "t3unlearn", "root": r.base_id,
                "parent": None, "max_model_len": self.engine.context, "t3": None}

    def head_card(self, head) -> dict:
        card = head.card(self.registry.base_id)
        card["t3"]["adjustable"] = not self.security.lock_guidance  # may a request's 't3' change it (the playground asks)
        return card


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc):
        return validation_error_response(exc)

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        return error_response(exc.status, exc.message, param=exc.param, type=exc.type, code=exc.code, headers=exc.headers)

    @app.exception_handler(HeadError)
    async def _head_error(request, exc: HeadError):
        code = {404: "model_not_found", 409: "conflict"}.get(exc.status, "invalid_head")
        return error_response(exc.status, redact_paths(str(exc)), param=exc.param, code=code)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        if exc.status_code == 400 and exc.__cause__ is not None:  # FastAPI could not parse the body (not a JSONDecodeError)
            why = ("it is not UTF-8 text" if isinstance(exc.__cause__, UnicodeDecodeError)
                   else "it is nested too deeply, or holds a number too long to read")
            return error_response(400, f"the request body could not be read as JSON ({why}); send one JSON object.",
                                  code="invalid_json")
        message = {404: f"no such endpoint: {request.method} {request.url.path}",
                   405: f"method {request.method} is not allowed on {request.url.path}"}.get(exc.status_code, "the request was refused")
        return error_response(exc.status_code, message, code="not_found" if exc.status_code == 404 else None)

    @app.exception_handler(Exception)
    async def _internal(request, exc: Exception):  # the log has the traceback; the response, the request id only
        rid = REQUEST_ID.get()
        log.error("request %s: internal error on %s %s", rid, request.method, request.url.path, exc_info=exc)
        request.state.logged = True  # GuardMiddleware sees the exception again: it need not log it twice
        return error_response(500, f"internal error (request id {rid}); the server's log has the details.")


def _api_routes(state: ServeState) -> tuple[APIRouter, APIRouter]:
    """``/v1`` routes for clients (API key) and for head management (admin key)."""
    registry, gen = state.registry, Generation(state)
    api = APIRouter(prefix="/v1", dependencies=[Depends(api_key_dependency(state.security))])
    admin = APIRouter(prefix="/v1", dependencies=[Depends(admin_key_dependency(state.security))])

    @api.get("/models")
    async def list_models():
        base = [] if state.security.no_base else [state.base_card()]
        return {"object": "list", "data": base + [state.head_card(h) for h in registry.heads()]}

    @api.get("/models/{model_id:path}")
    async def get_model(model_id: str):
        head = state.resolve(model_id)
        return state.base_card() if head is None else state.head_card(head)

    @api.post("/completions")
    async def completions(req: CompletionRequest, request: Request):
        return await gen.completions(req, request)

    @api.post("/chat/completions")
    async def chat(req: ChatRequest, request: Request):
        return await gen.chat(req, request)

    @admin.post("/heads", status_code=201)
    async def add_head(req: HeadRequest):
        head = await run_in_threadpool(registry.add, req.name, req.path, force=req.force, **req.guidance_changes())
        log.info("request %s: head %s added from %s (%s)", REQUEST_ID.get(), head.name, head.path, head.guidance.label())
        return state.head_card(head)

    @admin.delete("/heads/{name:path}")
    async def delete_head(name: str):
        head = registry.remove(name)
        log.info("request %s: head %s removed", REQUEST_ID.get(), head.name)
        return {"id": head.name, "object": "model", "deleted": True}

    return api, admin


def _open_routes(app: FastAPI, state: ServeState) -> None:
    """Routes without a key: health, metrics, the playground."""
    registry, engine = state.registry, state.engine

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": None if state.security.no_base else registry.base_id, "heads": len(registry),
                **engine.stats(), "uptime_s": round(time.time() - state.started, 1)}

    @app.get("/metrics")
    async def metrics():
        body, content_type = state.metrics.exposition()
        return Response(body, media_type=content_type)

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


def create_app(state: ServeState, *, cors_origins=(), access_log: bool = False):
    """The ASGI app over ``state`` (the engine must be started by the caller): FastAPI inside
    :class:`GuardMiddleware`. ``cors_origins``: origins allowed to call the API from a browser (none by default)."""
    app = FastAPI(title="t3unlearn serve", version="1", docs_url="/docs", redoc_url=None)
    app.state.serve = state
    _error_handlers(app)
    for router in _api_routes(state):
        app.include_router(router)
    _open_routes(app, state)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "X-Request-Id"], expose_headers=["X-Request-Id"])
    return GuardMiddleware(app, state, access_log=access_log)


def build(model, tokenizer, *, base_id: str, base_path: str | None = None, heads: dict[str, str] | None = None,
          max_batch: int = 32, max_n: int = 16, max_body: int = 1 << 20, force_heads: bool = False,
          security: Security | None = None, max_queue: int = 1024, request_timeout: float | None = None,
          cors_origins=(), access_log: bool = False, start: bool = True):
    """An app ready to serve ``model`` with ``heads`` (name -> directory): ``(asgi_app, state)``; the
    engine is started (unless ``start`` is False). Raises :class:`HeadError` for a head that cannot be served."""
    from t3unlearn.data import QAFormatter
    from t3unlearn.t3.features import hidden_size_of, vocab_size_of
    from t3unlearn.t3.model import tokenizer_hash

    template = "chat" if QAFormatter(tokenizer).use_chat else "plain"  # how ServeState's formatter formats prompts
    registry = HeadRegistry(base_id, hidden_size=hidden_size_of(model), vocab_size=vocab_size_of(model),
                            tokenizer_hash=tokenizer_hash(tokenizer), base_path=base_path, device=next(model.parameters()).device,
                            template=template)
    for name, path in (heads or {}).items():
        registry.add(name, path, force=force_heads)
    engine = Engine(model, tokenizer, max_batch=max_batch, max_waiting=max_queue)
    state = ServeState(engine, registry, tokenizer, max_n=max_n, max_body=max_body, base_path=base_path, security=security,
                       request_timeout=request_timeout)
    app = create_app(state, cors_origins=cors_origins, access_log=access_log)
    if start:
        engine.start()
    return app, state
