"""OpenAI-style error objects: ``{"error": {"message", "type", "param", "code"}}``.

Every error the server answers is one of these. Validation errors name the field at fault; internal
errors never carry exception text or a path (those go to the server's log, with the request id).
"""

from __future__ import annotations

import re

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


def _type_of(status: int) -> str:
    return _TYPES.get(status) or ("invalid_request_error" if status < 500 else "server_error")


class APIError(Exception):
    """An error answered as an OpenAI error object (``headers``: extra response headers, e.g. Retry-After)."""

    def __init__(self, status: int, message: str, *, param: str | None = None, type: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or _type_of(status)
        self.headers = headers


def error_body(message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(status: int, message: str, *, param: str | None = None, type: str | None = None, code: str | None = None,
                   headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type=type or _type_of(status), param=param, code=code), status_code=status,
                        headers=headers)


# an absolute path, not one of this API's routes (/v1/models, ...)
_ABS_PATH = re.compile(r"(?<![\w:/.~])(?!/v1/(?:models|heads|completions|chat)\b)~?/(?:[^\s'\"/:]+/)+([^\s'\":,;)]+)")


def redact_paths(text: str) -> str:
    """``text`` with every absolute (or ``~``) path shortened to ``.../LAST`` (its last component); the API's own
    routes (``/v1/models``, which messages point clients to) are kept."""
    return _ABS_PATH.sub(lambda m: ".../" + m.group(1), text)


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
        return error_response(400, f"the request body is not valid JSON ({detail} at character {pos}); send one JSON object.",
                              code="invalid_json")
    param = _param_of(first.get("loc", ()))
    if param is None:
        if kind == "missing":
            return error_response(400, "the request body is missing; send a JSON object (Content-Type: application/json).")
        if isinstance(first.get("input"), bytes):  # not read as JSON: a browser's request of another content type
            return error_response(400, "the request body was not read as JSON: its Content-Type is not application/json; "
                                  "send it with the header 'Content-Type: application/json'.")
        return error_response(400, "the request body must be a JSON object.")
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
