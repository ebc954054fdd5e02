"""Optional API keys and per-key rate limits.

Keys are kept only as sha256 digests and compared with ``hmac.compare_digest`` against every
stored digest (no early exit), so neither memory dumps nor timing reveal a key. A key file
holds one key per line: ``KEY`` or ``sha256:HEX`` followed by optional ``name=...``,
``models=a,b``, ``endpoints=/v1/chat/completions,/v1/models``, ``blocked=true``, ``rpm=N``,
``tpm=N``, ``admin=true`` (sees every key's files, batches and stored results:
``server.jobs.tenancy``). With no keys configured the server is
open and every caller is the anonymous key.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from fastapi import Request

from grokd.server.errors import APIError, rate_limited


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class ApiKey:
    digest: str
    name: str
    redacted: str
    key_id: str
    models: list[str] | None = None  # None = every model
    endpoints: list[str] | None = None  # path prefixes; None = every endpoint
    blocked: bool = False
    rpm: int = 0
    tpm: int = 0
    admin: bool = False
    created: float = field(default_factory=time.time)

    def allows_model(self, model_id: str) -> bool:
        return self.models is None or "*" in self.models or model_id in self.models

    def allows_path(self, path: str) -> bool:
        return self.endpoints is None or any(path == e or path.startswith(e.rstrip("/") + "/")
                                             for e in self.endpoints)

    @property
    def acls(self) -> list[str]:
        return [*(f"api-key:endpoint:{e}" for e in self.endpoints or ["*"]),
                *(f"api-key:model:{m}" for m in self.models or ["*"])]


ANONYMOUS = ApiKey(digest="", name="anonymous", redacted="", key_id="anonymous")


def _redact(key: str) -> str:
    return f"{key[:4]}...{key[-4:]}" if len(key) > 12 else "****"


def parse_key_line(line: str, default_rpm: int = 0, default_tpm: int = 0) -> ApiKey | None:
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    secret, *opts = line.split()
    kv = dict(o.split("=", 1) for o in opts if "=" in o)
    if secret.startswith("sha256:"):
        digest, redacted = secret.removeprefix("sha256:").lower(), "sha256:" + secret[7:15] + "..."
    else:
        digest, redacted = hash_key(secret), _redact(secret)
    return ApiKey(
        digest=digest,
        name=kv.get("name", f"key-{digest[:8]}"),
        redacted=redacted,
        key_id=digest[:16],
        models=kv["models"].split(",") if "models" in kv else None,
        endpoints=kv["endpoints"].split(",") if "endpoints" in kv else None,
        blocked=kv.get("blocked", "false").lower() in ("1", "true", "yes"),
        admin=kv.get("admin", "false").lower() in ("1", "true", "yes"),
        rpm=int(kv.get("rpm", default_rpm)),
        tpm=int(kv.get("tpm", default_tpm)),
    )


class _Bucket:
    """Token bucket holding up to ``per_minute``, refilled continuously."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.level = float(per_minute)
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        t = time.monotonic()
        self.level = min(self.capacity, self.level + (t - self.stamp) * self.capacity / 60.0)
        self.stamp = t

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` is available (0 = now)."""
        self._refill()
        if self.level >= amount:
            return 0.0
        return (amount - self.level) * 60.0 / self.capacity

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount


class Authenticator:
    """Checks the bearer key of each request and enforces its per-minute budgets."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = keys
        self._lock = threading.Lock()
        self._requests: dict[str, _Bucket] = {}
        self._tokens: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    @classmethod
    def from_config(
        cls, keys: list[str], key_file: str | None, rpm: int = 0, tpm: int = 0
    ) -> Authenticator:
        lines = list(keys)
        if key_file:
            lines += Path(key_file).read_text().splitlines()
        parsed = [parse_key_line(line, rpm, tpm) for line in lines]
        return cls([k for k in parsed if k is not None])

    def identify(self, authorization: str | None, x_api_key: str | None = None) -> ApiKey:
        if not self.enabled:
            return ANONYMOUS
        secret = None
        if authorization:
            scheme, _, value = authorization.partition(" ")
            secret = value.strip() if scheme.lower() == "bearer" else None
        secret = secret or x_api_key
        if not secret:
            raise APIError(401, "Missing API key: send it as 'Authorization: Bearer <key>'.",
                           type="authentication_error", code="invalid_api_key")
        digest = hash_key(secret)
        found: ApiKey | None = None
        for key in self.keys:  # every comparison runs: timing does not depend on which key matched
            if hmac.compare_digest(key.digest, digest):
                found = key
        if found is None:
            raise APIError(401, "Incorrect API key provided.", type="authentication_error",
                           code="invalid_api_key")
        if found.blocked:
            raise APIError(403, "This API key is blocked.", type="permission_error", code="api_key_blocked")
        return found

    def check_request(self, key: ApiKey) -> None:
        """Charge one request; 429 when the key's requests/min or tokens/min budget is spent."""
        with self._lock:
            if key.tpm:
                tokens = self._tokens.setdefault(key.key_id, _Bucket(key.tpm))
                wait = tokens.wait_for(1)
                if wait:
                    raise rate_limited(f"Rate limit reached for {key.name}: tokens per minute ({key.tpm}).", wait)
            if key.rpm:
                requests = self._requests.setdefault(key.key_id, _Bucket(key.rpm))
                wait = requests.wait_for(1)
                if wait:
                    raise rate_limited(f"Rate limit reached for {key.name}: requests per minute ({key.rpm}).", wait)
                requests.take(1)

    def charge_tokens(self, key: ApiKey, n: int) -> None:
        """Tokens are known only after the fact; the debt delays this key's next requests."""
        if key.tpm and n > 0:
            with self._lock:
                self._tokens.setdefault(key.key_id, _Bucket(key.tpm)).take(n)


def describe(key: ApiKey) -> dict[str, object]:
    stamp = datetime.fromtimestamp(key.created, UTC).isoformat().replace("+00:00", "Z")
    return {
        "redacted_api_key": key.redacted,
        "user_id": "local",
        "name": key.name,
        "create_time": stamp,
        "modify_time": stamp,
        "modified_by": "local",
        "team_id": "local",
        "acls": key.acls,
        "api_key_id": key.key_id,
        "team_blocked": False,
        "api_key_blocked": key.blocked,
        "api_key_disabled": False,
    }


INTERNAL = ApiKey(digest="", name="internal", redacted="", key_id="internal")


async def require_api_key(request: Request) -> ApiKey:
    """FastAPI dependency for every /v1 route: identifies the caller and charges its budget.

    In-process calls from the server's own job runner are marked in the ASGI scope (which no
    client can set); they were authorised when the job was accepted.
    """
    state = request.app.state.server
    if request.scope.get("state", {}).get("internal_caller"):
        request.state.api_key = INTERNAL
        return INTERNAL
    key = state.auth.identify(request.headers.get("authorization"), request.headers.get("x-api-key"))
    if not key.allows_path(request.url.path):
        raise APIError(403, f"This API key may not use {request.url.path}.", type="permission_error",
                       code="endpoint_not_allowed")
    state.auth.check_request(key)
    request.state.api_key = key
    return key
