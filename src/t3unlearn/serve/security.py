"""Access control: API keys (as vLLM's and TGI's ``--api-key``), the admin key for head management, and
the deployment switches ``--lock-guidance`` and ``--no-base``.

- ``api_key`` (``--api-key`` or ``T3UNLEARN_API_KEY``): every ``/v1`` route needs ``Authorization: Bearer KEY``
  (what OpenAI clients send); 401 otherwise. The admin key is accepted there too.
- ``admin_key`` (``--admin-key`` or ``T3UNLEARN_ADMIN_KEY``): ``POST`` / ``DELETE /v1/heads`` need it; without
  one, head management is off (403) and the heads are those the server was started with.
- ``lock_guidance``: a request's ``t3`` is refused (403); each head serves the guidance it was saved (or
  added) with, so no client can turn the unlearning down.
- ``no_base``: the base model is not served by name (only its heads are), so no client can ask the model
  that still knows everything.

Keys are compared in constant time (:func:`secrets.compare_digest`). ``/health``, ``/metrics`` and the
playground page stay open (they carry no model output), as do ``/docs`` and ``/openapi.json`` (the API's
schema); the playground asks for the key.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from t3unlearn.serve.errors import APIError

API_KEY_ENV = "T3UNLEARN_API_KEY"
ADMIN_KEY_ENV = "T3UNLEARN_ADMIN_KEY"

_bearer = HTTPBearer(auto_error=False, description="the server's API key (--api-key), or the admin key")


@dataclass(frozen=True)
class Security:
    """What a deployment locks down (all off by default: a local server for one user)."""

    api_key: str | None = None
    admin_key: str | None = None
    lock_guidance: bool = False
    no_base: bool = False

    def __post_init__(self):
        for name in ("api_key", "admin_key"):
            key = getattr(self, name)
            if key is not None and (not key.strip() or key != key.strip()):
                raise ValueError(f"the {name.replace('_', ' ')} must be a non-empty string without surrounding spaces.")
        if self.api_key is not None and self.api_key == self.admin_key:
            raise ValueError("the admin key must differ from the API key: with one key for both, every client could "
                             "remove heads, or add one back with scale 0.")

    @classmethod
    def from_env(cls, api_key: str | None = None, admin_key: str | None = None, **flags) -> "Security":
        """Keys from the arguments, else from ``T3UNLEARN_API_KEY`` / ``T3UNLEARN_ADMIN_KEY`` (empty = none)."""
        return cls(api_key=api_key or os.environ.get(API_KEY_ENV) or None,
                   admin_key=admin_key or os.environ.get(ADMIN_KEY_ENV) or None, **flags)


def _same(given: str | None, key: str | None) -> bool:
    return given is not None and key is not None and secrets.compare_digest(given.encode(), key.encode())


def _unauthorized(given: str | None, *, admin: bool = False) -> APIError:
    if admin:  # head management: the admin key is what is missing or wrong, whether or not the API needs a key
        message = ("adding and removing heads needs the admin key (--admin-key): send the header "
                   "'Authorization: Bearer ADMIN_KEY'." if given is None else
                   "the key is not this server's admin key; check the key you were given (no spaces, the whole key).")
    elif given is None:
        message = ("this server needs an API key: send the header 'Authorization: Bearer YOUR_KEY' "
                   "(openai clients: api_key=YOUR_KEY, or the OPENAI_API_KEY environment variable).")
    else:
        message = "the API key is not valid for this server; check the key you were given (no spaces, the whole key)."
    return APIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def api_key_dependency(security: Security):
    """A FastAPI dependency: 401 unless the request carries the API key (or the admin key), when one is set."""

    async def require_api_key(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
        if security.api_key is None:
            return
        given = credentials.credentials if credentials is not None else None
        if not (_same(given, security.api_key) or _same(given, security.admin_key)):
            raise _unauthorized(given)

    return require_api_key


def admin_key_dependency(security: Security):
    """A FastAPI dependency for head management: 403 when no admin key is set; else 401 without a valid key
    and 403 with the API key (a user, not the admin)."""

    async def require_admin_key(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
        if security.admin_key is None:
            raise APIError(403, "adding and removing heads is off on this server; start it with --admin-key "
                           f"(or {ADMIN_KEY_ENV}) and send that key to manage heads.", code="admin_disabled")
        given = credentials.credentials if credentials is not None else None
        if _same(given, security.admin_key):
            return
        if given is not None and (security.api_key is None or _same(given, security.api_key)):
            raise APIError(403, "adding and removing heads needs the admin key (--admin-key), not the API key.",
                           code="admin_key_required")
        raise _unauthorized(given, admin=True)

    return require_admin_key
