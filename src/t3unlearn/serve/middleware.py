"""The outermost ASGI layer: request ids, metrics, the access log, the body limit and the drain.

Pure ASGI (no ``BaseHTTPMiddleware``): streams pass through untouched. For every HTTP request it

- takes the client's ``X-Request-Id`` (letters, digits, ``._:-``, at most 64) or makes one, echoes it in
  the response's ``X-Request-Id`` header, and puts it in :data:`REQUEST_ID` for the log lines of the request;
- answers 503 while the server drains, and 413 for a body over ``max_body`` bytes before the app reads
  it (the body is read once and replayed);
- reads every request body as JSON whatever its ``Content-Type`` (curl's ``-d`` sends
  ``application/x-www-form-urlencoded``; this API takes JSON only), except a browser's: a request with an
  ``Origin`` must say ``application/json``, which a page of another site cannot send without CORS's consent;
- counts the request by route, model and status, and observes its duration (to the last byte sent);
- logs one access line with the request id (unless ``access_log`` is off);
- answers an exception that escaped the app with a JSON 500 that says only "internal error" and the
  request id (the traceback is logged).
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid

from t3unlearn.serve.errors import error_response
from t3unlearn.serve.metrics import route_of

log = logging.getLogger("t3unlearn.serve")
access_log = logging.getLogger("t3unlearn.serve.access")

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("t3unlearn_request_id", default="-")
_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def request_id_of(headers) -> str:
    given = dict(headers or []).get(b"x-request-id", b"").decode("latin-1")
    return given if _ID_RE.match(given) else uuid.uuid4().hex


def _as_json(scope):
    """``scope`` with its body declared ``application/json`` (whatever type it was sent with, or none), unless it
    has an ``Origin`` (a browser's request): the app then reads the body as JSON, and answers 400 if it is not."""
    headers = scope.get("headers") or []
    if any(k == b"origin" for k, _v in headers):
        return scope
    return {**scope, "headers": [(k, v) for k, v in headers if k != b"content-type"] + [(b"content-type", b"application/json")]}


class GuardMiddleware:
    """See the module doc; ``state`` is the app's :class:`~t3unlearn.serve.app.ServeState`."""

    def __init__(self, app, state, *, access_log: bool = True):
        self.app, self.state, self.access_log = app, state, access_log

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        st, rid, t0 = self.state, request_id_of(scope.get("headers")), time.perf_counter()
        REQUEST_ID.set(rid)
        scope.setdefault("state", {}).update(request_id=rid, t0=t0)
        status = {"code": 0, "recorded": False}

        def record():
            if not status["recorded"]:
                status["recorded"] = True
                self._record(scope, rid, t0, status["code"] or 500)

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message = {**message, "headers": list(message.get("headers", [])) + [(b"x-request-id", rid.encode())]}
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                record()  # before the last byte leaves: a client that reads /metrics next finds this request counted
            await send(message)

        st.inflight += 1
        st.metrics.in_flight.inc()
        try:
            await self._guarded(scope, receive, send_with_id)
        except Exception:  # noqa: BLE001 - the app's 500 handler has answered (or the response had started)
            if not scope["state"].get("logged"):
                log.exception("request %s: unhandled error on %s %s", rid, scope.get("method"), scope.get("path"))
            if not status["code"]:
                await error_response(500, f"internal error (request id {rid}); the server's log has the details.")(
                    scope, receive, send_with_id)
        finally:
            st.inflight -= 1
            st.metrics.in_flight.dec()
            record()  # a request that ended without a last body message (client gone, error)

    async def _guarded(self, scope, receive, send):
        st = self.state
        if st.draining:
            return await error_response(503, "the server is shutting down; retry on another replica.", code="shutting_down")(
                scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > st.max_body:
            return await self._too_large(scope, receive, send)
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
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
        scope = _as_json(scope)

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send):
        resp = error_response(413, f"the request body is over {self.state.max_body} bytes; send a smaller request.",
                              code="request_too_large")
        await resp(scope, receive, send)

    def _record(self, scope, rid: str, t0: float, status: int) -> None:
        route, model = route_of(scope.get("path", "")), scope["state"].get("model") or "-"
        took = time.perf_counter() - t0
        metrics = self.state.metrics
        metrics.requests.labels(route, model, str(status)).inc()
        metrics.latency.labels(route, model).observe(took)
        if self.access_log:
            client = scope.get("client") or ("-", 0)
            access_log.info('%s "%s %s" %d %.3fs model=%s request_id=%s', client[0], scope.get("method"), scope.get("path"),
                            status, took, model, rid)
