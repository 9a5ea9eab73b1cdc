"""Credentials: JWTs (HS256) bound to a vehicle, a gateway's vehicles, or an operator.

A token is a JWT sent as gRPC metadata ``authorization: Bearer <token>``. It always carries ``exp`` (no
token lives forever; the issuer caps its lifetime), ``aud`` (``evtwin``: a JWT minted for another service
with the same key is refused) and a ``kid`` header naming the key that signed it. The server holds a
*key set* (``serving.auth_secret_path``): the current key signs, every key not yet retired verifies, so
tokens signed before a rotation keep working until the previous key retires (``evtwin keys rotate``).

Roles:

- ``vehicle``: writes telemetry for exactly one vehicle id (``sub``).
- ``gateway``: writes telemetry for the vehicle ids matching its ``vehicles`` pattern (fnmatch), so a depot
  gateway multiplexes many vehicles on one stream with one credential. The pattern needs a literal prefix
  (``DEPOT3-*``); ``*`` or ``?1*`` only when issued with ``allow_wildcard=True``.
- ``operator``: reads twins and alerts; writes any vehicle only when issued with ``write=True``.

>>> keys = KeySet.single(b"0" * 32)
>>> token = issue_token(keys, Claims(role="vehicle", sub="V7"), ttl_s=3600, now_s=0)
>>> claims = verify_token(keys, token, now_s=10)
>>> claims.may_write("V7"), claims.may_write("V8"), claims.may_read(), claims.exp
(True, False, False, 3600)
>>> verify_token(KeySet.single(b"1" * 32, kid=keys.current), token, now_s=10)
Traceback (most recent call last):
...
serving.auth.AuthError: token signature does not verify
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import jwt

from configs.schema import is_vehicle_id

ROLES = ("vehicle", "gateway", "operator")
AUDIENCE = "evtwin"
ISSUER = "evtwin"
ALGORITHM = "HS256"
SECRET_BYTES = 32
MIN_SECRET_BYTES = 16
DEFAULT_TTL_S = 86_400.0
DEFAULT_MAX_TTL_S = 90 * 86_400.0
KEYS_FORMAT = "evtwin-keys/1"
_WILDCARDS = "*?["
V1_REFUSAL = "token format v1 is no longer accepted; issue a new one with `evtwin keys token`"


class AuthError(Exception):
    """A credential is missing, malformed, forged or expired (gRPC UNAUTHENTICATED)."""


@dataclass(frozen=True)
class Claims:
    role: Literal["vehicle", "gateway", "operator"]
    sub: str  # vehicle id, gateway name or operator name
    vehicles: str = ""  # gateway only: fnmatch pattern of the vehicle ids it may write
    write: bool = False  # operator only: may also write telemetry (replays, demos)
    exp: int = 0  # expiry, seconds since epoch; set by issue_token, always present in a verified token

    def may_write(self, vehicle_id: str) -> bool:
        if self.role == "operator":
            return self.write
        if self.role == "vehicle":
            return vehicle_id == self.sub
        return fnmatch.fnmatchcase(vehicle_id, self.vehicles)

    def may_read(self) -> bool:
        return self.role == "operator"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    secret: bytes = field(repr=False)
    created_s: float = 0.0
    retire_at_s: float | None = None  # verifies no token after this time; None: until retired by hand


@dataclass(frozen=True)
class KeySet:
    """The current signing key and the previous keys still accepted during a rotation."""

    current: str
    keys: tuple[SigningKey, ...]

    def __post_init__(self) -> None:
        kids = [k.kid for k in self.keys]
        if len(set(kids)) != len(kids):
            raise ValueError(f"key set: key ids repeat ({kids})")
        if self.current not in kids:
            raise ValueError(f"key set: current key {self.current!r} is not among {kids}")
        for key in self.keys:
            if len(key.secret) < MIN_SECRET_BYTES:
                raise ValueError(f"key {key.kid!r}: secret too short ({len(key.secret)} bytes, need >= {MIN_SECRET_BYTES})")

    @classmethod
    def single(cls, secret: bytes, kid: str | None = None, created_s: float = 0.0) -> KeySet:
        """A key set of one key; the key id defaults to a digest of the secret (stable across processes)."""
        kid = kid or "k" + hashlib.sha256(secret).hexdigest()[:12]
        return cls(current=kid, keys=(SigningKey(kid, secret, created_s),))

    @classmethod
    def generate(cls, now_s: float) -> KeySet:
        return cls.single(secrets.token_bytes(SECRET_BYTES), kid=_new_kid(now_s), created_s=now_s)

    def signing_key(self) -> SigningKey:
        return next(k for k in self.keys if k.kid == self.current)

    def verification_secret(self, kid: str, now_s: float) -> bytes:
        for key in self.keys:
            if key.kid == kid:
                if key.retire_at_s is not None and now_s > key.retire_at_s:
                    raise AuthError(f"token signed with key {kid!r}, retired at {_utc(key.retire_at_s)}; "
                                    "issue a new token")
                return key.secret
        raise AuthError(f"token signature does not verify: signed with key {kid[:40]!r}, which this server does not "
                        "hold (retired, or another server's)")

    def rotated(self, now_s: float, previous_until_s: float | None = None) -> KeySet:
        """A new current key; the old keys keep verifying until ``previous_until_s`` (None: until retired)."""
        kept = tuple(replace(k, retire_at_s=previous_until_s if k.retire_at_s is None else min(k.retire_at_s, previous_until_s))
                     if previous_until_s is not None else k for k in self.keys)
        new = SigningKey(_new_kid(now_s), secrets.token_bytes(SECRET_BYTES), now_s)
        return KeySet(current=new.kid, keys=kept + (new,))

    def without_previous(self) -> KeySet:
        """Only the current key: tokens signed by any other key stop verifying."""
        return KeySet(current=self.current, keys=(self.signing_key(),))

    def to_json(self) -> str:
        return json.dumps({"format": KEYS_FORMAT, "current": self.current, "keys": [
            {"kid": k.kid, "secret": k.secret.hex(), "created_s": k.created_s, "retire_at_s": k.retire_at_s}
            for k in self.keys]}, indent=1) + "\n"

    @classmethod
    def from_text(cls, text: str, where: str = "key set") -> KeySet:
        """Parse a key-set file; a bare hex secret (the format before key sets) is a set of one key."""
        text = text.strip()
        if not text.startswith("{"):
            try:
                return cls.single(bytes.fromhex(text))
            except ValueError as error:
                raise ValueError(f"{where}: neither a key set (JSON) nor a hex secret ({error})") from None
        try:
            document = json.loads(text)
            if document.get("format") != KEYS_FORMAT:
                raise ValueError(f"format {document.get('format')!r}, expected {KEYS_FORMAT!r}")
            keys = tuple(SigningKey(str(k["kid"]), bytes.fromhex(k["secret"]), float(k.get("created_s", 0.0)),
                                    None if k.get("retire_at_s") is None else float(k["retire_at_s"]))
                         for k in document["keys"])
            return cls(current=str(document["current"]), keys=keys)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"{where}: unreadable key set ({type(error).__name__}: {error})") from None


def _new_kid(now_s: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now_s)) + "-" + secrets.token_hex(3)


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _as_keys(keys: KeySet | bytes) -> KeySet:
    return keys if isinstance(keys, KeySet) else KeySet.single(keys)


def check_gateway_pattern(pattern: str, allow_wildcard: bool = False) -> None:
    """Refuse an empty pattern, and (unless ``allow_wildcard``) one without a literal prefix such as ``*``."""
    if not pattern:
        raise ValueError("gateway vehicles pattern is empty: a gateway token needs one, e.g. 'DEPOT3-*'")
    if pattern[0] in _WILDCARDS and not allow_wildcard:
        raise ValueError(f"gateway vehicles pattern {pattern!r} has no literal prefix: it would let one credential "
                         "write vehicles of every depot; use e.g. 'DEPOT3-*', or allow it explicitly "
                         "(--allow-wildcard)")


def issue_token(keys: KeySet | bytes, claims: Claims, ttl_s: float = DEFAULT_TTL_S, now_s: float | None = None,
                max_ttl_s: float = DEFAULT_MAX_TTL_S, allow_wildcard: bool = False) -> str:
    """A JWT for ``claims`` signed with the current key, expiring ``ttl_s`` seconds from ``now_s``."""
    keys = _as_keys(keys)
    if claims.role not in ROLES:
        raise ValueError(f"role {claims.role!r}: expected one of {ROLES}")
    if not claims.sub:
        raise ValueError("sub: empty (a vehicle id, gateway name or operator name)")
    if claims.role == "vehicle" and not is_vehicle_id(claims.sub):
        raise ValueError(f"vehicle {claims.sub[:80]!r}: not a vehicle id (1-64 characters of [A-Za-z0-9._:/-])")
    if claims.role == "gateway":
        check_gateway_pattern(claims.vehicles, allow_wildcard)
    elif claims.vehicles:
        raise ValueError(f"vehicles={claims.vehicles!r}: only a gateway token carries a vehicles pattern")
    if claims.write and claims.role != "operator":
        raise ValueError(f"write: only operator tokens carry it ({claims.role} tokens write their own vehicles)")
    if not ttl_s > 0:
        raise ValueError(f"ttl={ttl_s!r} s: a token must expire (give a positive lifetime)")
    if ttl_s > max_ttl_s:
        raise ValueError(f"ttl={ttl_s / 86400:g} days: above the maximum of {max_ttl_s / 86400:g} days "
                         "(serving.token_max_ttl_days)")
    now_s = time.time() if now_s is None else now_s
    payload: dict[str, Any] = {"sub": claims.sub, "role": claims.role, "aud": AUDIENCE, "iss": ISSUER,
                               "iat": int(now_s), "exp": int(now_s + ttl_s)}
    if claims.role == "gateway":
        payload["vehicles"] = claims.vehicles
    if claims.write:
        payload["write"] = True
    key = keys.signing_key()
    return jwt.encode(payload, key.secret, algorithm=ALGORITHM, headers={"kid": key.kid})


def verify_token(keys: KeySet | bytes, token: str, now_s: float) -> Claims:
    """Claims of a token signed by a key of ``keys``, for this audience, not expired; raises AuthError."""
    keys = _as_keys(keys)
    if token.startswith("v1."):
        raise AuthError(V1_REFUSAL)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AuthError("token is not a JWT (expected header.claims.signature)") from None
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise AuthError("token has no key id (kid header)")
    if header.get("alg") != ALGORITHM:
        raise AuthError(f"token algorithm {str(header.get('alg'))[:20]!r} refused (only {ALGORITHM})")
    secret = keys.verification_secret(kid, now_s)
    try:
        # Expiry is checked below against now_s (the caller's clock), the rest by PyJWT.
        document = jwt.decode(token, secret, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER,
                              options={"require": ["exp", "aud", "sub", "iss"], "verify_exp": False,
                                       "verify_iat": False})
    except jwt.InvalidSignatureError:
        raise AuthError("token signature does not verify") from None
    except jwt.InvalidAudienceError:
        raise AuthError(f"token audience is not {AUDIENCE!r}") from None
    except jwt.MissingRequiredClaimError as error:
        raise AuthError(f"token lacks the {error.claim!r} claim") from None
    except jwt.PyJWTError as error:
        raise AuthError(f"token unreadable ({type(error).__name__})") from None
    try:
        claims = Claims(role=document["role"], sub=str(document["sub"]), vehicles=str(document.get("vehicles", "")),
                        write=document.get("write") is True, exp=int(document["exp"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise AuthError(f"token claims unreadable ({type(exc).__name__})") from None
    if claims.role not in ROLES:
        raise AuthError(f"token role {str(claims.role)[:20]!r} unknown")
    if claims.exp < now_s:
        raise AuthError(f"token expired at {_utc(claims.exp)}")
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


def authorize_prediction(keys: KeySet | bytes, metadata: Sequence[tuple[str, str | bytes]] | None,
                         vehicle_ids: Sequence[str], now_s: float) -> Claims:
    """Who may call ``PredictionService``: an operator, or a vehicle (gateway) token for rows of its own
    vehicles only (every row named in ``vehicle_ids``). Raises AuthError (UNAUTHENTICATED) or
    PermissionError (PERMISSION_DENIED)."""
    claims = verify_token(keys, bearer_token(tuple(metadata or ())), now_s)
    if claims.may_read():
        return claims
    if not vehicle_ids:
        raise PermissionError(f"a {claims.role} token may predict only for its own vehicles: name them in "
                              "vehicle_ids (one per row)")
    foreign = next((v for v in vehicle_ids if not claims.may_write(v)), None)
    if foreign is not None:
        raise PermissionError(f"vehicle_ids: {foreign[:80]!r} is not a vehicle this {claims.role} token holds")
    return claims


def write_private(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only (0600), atomically; no temporary file is left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def load_keys(path: str | Path) -> KeySet:
    path = Path(path)
    return KeySet.from_text(path.read_text(), where=str(path))


def save_keys(path: str | Path, keys: KeySet) -> None:
    write_private(path, keys.to_json().encode())


def load_or_create_keys(path: str | Path, now_s: float | None = None) -> KeySet:
    """The key set at ``path``; a new one with one random key (file mode 0600) when the file does not exist."""
    path = Path(path)
    if path.exists():
        return load_keys(path)
    keys = KeySet.generate(time.time() if now_s is None else now_s)
    save_keys(path, keys)
    return keys


class KeySetFile:
    """The key set of a file, re-read when the file changes (checked at most every ``check_every_s``), so a
    running server picks up ``evtwin keys rotate`` without a restart. A file that cannot be read keeps the
    last good key set (a rotation writes atomically, so this is a removed or mangled file, not a race)."""

    def __init__(self, path: str | Path, check_every_s: float = 5.0, clock_s: Any = time.monotonic) -> None:
        self.path = Path(path)
        self.check_every_s = check_every_s
        self.clock_s = clock_s
        self._keys = load_keys(self.path)
        self._stamp = self._file_stamp()
        self._checked_at = clock_s()

    def _file_stamp(self) -> tuple[int, int, int]:
        stat = self.path.stat()
        return stat.st_mtime_ns, stat.st_size, stat.st_ino

    def current(self) -> KeySet:
        now = self.clock_s()
        if now - self._checked_at >= self.check_every_s:
            self._checked_at = now
            try:
                stamp = self._file_stamp()
                if stamp != self._stamp:
                    self._keys, self._stamp = load_keys(self.path), stamp
            except (OSError, ValueError):
                pass  # keep verifying with the last good key set
        return self._keys


def rotate_keys(path: str | Path, now_s: float, previous_until_s: float | None = None) -> KeySet:
    """Add a new current key to the set at ``path``; the previous keys verify until ``previous_until_s``."""
    keys = load_keys(path).rotated(now_s, previous_until_s)
    save_keys(path, keys)
    return keys


def retire_previous_keys(path: str | Path) -> KeySet:
    keys = load_keys(path).without_previous()
    save_keys(path, keys)
    return keys
