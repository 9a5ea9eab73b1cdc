"""Credentials: HMAC-signed tokens bound to a vehicle (or a gateway's vehicles, or an operator).

A token is ``v1.<base64url(JSON claims)>.<base64url(HMAC-SHA256(secret, "v1." + claims))>``, sent as
gRPC metadata ``authorization: Bearer <token>``. Roles:

- ``vehicle``: writes telemetry for exactly one vehicle id (``sub``).
- ``gateway``: writes telemetry for the vehicle ids matching its ``vehicles`` pattern (fnmatch), so a depot
  gateway multiplexes many vehicles on one stream with one credential.
- ``operator``: reads twins and alerts, and may write any vehicle (replays, demos).

>>> secret = b"0" * 32
>>> token = issue_token(secret, Claims(role="vehicle", sub="V7"))
>>> claims = verify_token(secret, token, now_s=0)
>>> claims.may_write("V7"), claims.may_write("V8"), claims.may_read()
(True, False, False)
>>> verify_token(b"1" * 32, token, now_s=0)
Traceback (most recent call last):
...
serving.auth.AuthError: token signature does not verify
"""
from __future__ import annotations

import base64
import binascii
import fnmatch
import hmac
import json
import os
import secrets
from dataclasses import asdict, dataclass
from hashlib import sha256
from pathlib import Path
from typing import Literal

TOKEN_VERSION = "v1"
ROLES = ("vehicle", "gateway", "operator")
SECRET_BYTES = 32


class AuthError(Exception):
    """A credential is missing, malformed, forged or expired (gRPC UNAUTHENTICATED)."""


@dataclass(frozen=True)
class Claims:
    role: Literal["vehicle", "gateway", "operator"]
    sub: str  # vehicle id, gateway name or operator name
    vehicles: str = ""  # gateway only: fnmatch pattern of the vehicle ids it may write
    exp: int = 0  # expiry, seconds since epoch; 0 = never

    def may_write(self, vehicle_id: str) -> bool:
        if self.role == "operator":
            return True
        if self.role == "vehicle":
            return vehicle_id == self.sub
        return fnmatch.fnmatchcase(vehicle_id, self.vehicles)

    def may_read(self) -> bool:
        return self.role == "operator"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, payload.encode(), sha256).digest())


def issue_token(secret: bytes, claims: Claims) -> str:
    if claims.role not in ROLES:
        raise ValueError(f"role {claims.role!r}: expected one of {ROLES}")
    if claims.role == "gateway" and not claims.vehicles:
        raise ValueError("a gateway token needs a vehicles pattern, e.g. 'DEPOT3-*'")
    body = _b64(json.dumps(asdict(claims), sort_keys=True, separators=(",", ":")).encode())
    payload = f"{TOKEN_VERSION}.{body}"
    return f"{payload}.{_sign(secret, payload)}"


def verify_token(secret: bytes, token: str, now_s: float) -> Claims:
    """Claims of a token whose signature verifies and that has not expired; raises AuthError."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != TOKEN_VERSION:
        raise AuthError("token is not a evtwin v1 token (expected v1.<claims>.<signature>)")
    payload = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(_sign(secret, payload), parts[2]):
        raise AuthError("token signature does not verify")
    try:
        document = json.loads(_unb64(parts[1]))
        claims = Claims(role=document["role"], sub=str(document["sub"]), vehicles=str(document.get("vehicles", "")),
                        exp=int(document.get("exp", 0)))
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise AuthError(f"token claims unreadable ({type(exc).__name__})") from None
    if claims.role not in ROLES:
        raise AuthError(f"token role {claims.role!r} unknown")
    if claims.exp and claims.exp < now_s:
        raise AuthError("token expired")
    return claims


def bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str:
    """The token from ``authorization: Bearer <token>`` metadata; raises AuthError when absent."""
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthError("authorization metadata must be 'Bearer <token>'")
            return token.strip()
    raise AuthError("no credentials: send metadata 'authorization: Bearer <token>' (see `evtwin keys token`)")


def load_or_create_secret(path: str | Path) -> bytes:
    """The HMAC secret at ``path``; a new random one (mode 0600) when the file does not exist."""
    path = Path(path)
    if path.exists():
        secret = bytes.fromhex(path.read_text().strip())
        if len(secret) < 16:
            raise ValueError(f"auth secret {path}: too short ({len(secret)} bytes, need >= 16)")
        return secret
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(SECRET_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret.hex() + "\n")
    return secret
