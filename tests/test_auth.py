"""Credentials: JWTs bound to their holder, always expiring, with an audience and a key id; forged, expired,
foreign and old-format tokens are refused; key sets rotate without cutting off issued tokens."""
from __future__ import annotations

import base64
import json

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.auth import (
    AuthError,
    Claims,
    KeySet,
    bearer_token,
    issue_token,
    load_keys,
    load_or_create_keys,
    retire_previous_keys,
    rotate_keys,
    verify_token,
)

SECRET = b"s" * 32
KEYS = KeySet.single(SECRET)
NOW = 1_800_000_000.0


def _issue(claims: Claims, **options) -> str:
    return issue_token(KEYS, claims, now_s=NOW, **options)


def test_a_vehicle_token_writes_only_its_own_vehicle_and_reads_nothing() -> None:
    claims = verify_token(KEYS, _issue(Claims(role="vehicle", sub="V1")), now_s=NOW)
    assert claims.may_write("V1")
    assert not claims.may_write("V10")
    assert not claims.may_read()


def test_a_gateway_token_writes_the_vehicles_its_pattern_matches() -> None:
    claims = verify_token(KEYS, _issue(Claims(role="gateway", sub="depot", vehicles="D3-*")), now_s=NOW)
    assert claims.may_write("D3-0001") and not claims.may_write("D4-0001")
    assert not claims.may_read()


def test_an_operator_reads_and_writes_only_when_granted_write() -> None:
    reader = verify_token(KEYS, _issue(Claims(role="operator", sub="ops")), now_s=NOW)
    assert reader.may_read() and not reader.may_write("anything")
    writer = verify_token(KEYS, _issue(Claims(role="operator", sub="ops", write=True)), now_s=NOW)
    assert writer.may_read() and writer.may_write("anything")
    with pytest.raises(ValueError, match="write"):
        _issue(Claims(role="vehicle", sub="V1", write=True))


def test_a_gateway_without_a_pattern_is_refused_at_issue() -> None:
    with pytest.raises(ValueError, match="pattern"):
        _issue(Claims(role="gateway", sub="depot"))


@pytest.mark.parametrize("pattern", ["*", "*-1", "?1*", "[A-Z]*"])
def test_a_gateway_pattern_without_a_literal_prefix_needs_allow_wildcard(pattern: str) -> None:
    with pytest.raises(ValueError, match="literal prefix"):
        _issue(Claims(role="gateway", sub="depot", vehicles=pattern))
    claims = verify_token(KEYS, _issue(Claims(role="gateway", sub="depot", vehicles=pattern), allow_wildcard=True),
                          now_s=NOW)
    assert claims.vehicles == pattern


def test_a_vehicle_token_names_a_valid_vehicle_id() -> None:
    with pytest.raises(ValueError, match="vehicle id"):
        _issue(Claims(role="vehicle", sub="V1\n"))


def test_a_token_is_a_jwt_with_exp_aud_and_kid() -> None:
    token = _issue(Claims(role="vehicle", sub="V1"), ttl_s=600)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256" and header["kid"] == KEYS.current
    payload = jwt.decode(token, SECRET, algorithms=["HS256"], audience="evtwin",
                         options={"verify_exp": False, "verify_iat": False})  # NOW is not the wall clock
    assert payload["exp"] == int(NOW + 600) and payload["aud"] == "evtwin" and payload["sub"] == "V1"


@pytest.mark.parametrize("ttl_s", [0, -1, 91 * 86_400])
def test_never_expiring_and_too_long_lived_tokens_are_not_issued(ttl_s: float) -> None:
    with pytest.raises(ValueError, match="ttl"):
        _issue(Claims(role="vehicle", sub="V1"), ttl_s=ttl_s)


def test_changing_the_claims_breaks_the_signature() -> None:
    token = _issue(Claims(role="vehicle", sub="V1"))
    header, body, signature = token.split(".")
    document = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    document["role"] = "operator"
    forged_body = base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()
    with pytest.raises(AuthError, match="signature"):
        verify_token(KEYS, f"{header}.{forged_body}.{signature}", now_s=NOW)


def test_an_expired_token_is_refused() -> None:
    token = _issue(Claims(role="vehicle", sub="V1"), ttl_s=100)
    assert verify_token(KEYS, token, now_s=NOW + 99).sub == "V1"
    with pytest.raises(AuthError, match="expired"):
        verify_token(KEYS, token, now_s=NOW + 101)


def _signed(payload: dict, headers: dict | None = None, secret: bytes = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(payload, secret, algorithm=algorithm, headers={"kid": KEYS.current, **(headers or {})})


@pytest.mark.parametrize("payload, headers, match", [
    ({"sub": "V1", "role": "vehicle", "aud": "evtwin", "iss": "evtwin"}, None, "exp"),  # never expires
    ({"sub": "V1", "role": "vehicle", "aud": "other", "iss": "evtwin", "exp": 2e9}, None, "audience"),
    ({"sub": "V1", "role": "vehicle", "iss": "evtwin", "exp": 2e9}, None, "aud"),
    ({"sub": "V1", "role": "vehicle", "aud": "evtwin", "iss": "evtwin", "exp": 2e9}, {"kid": "nobody"}, "key"),
    ({"sub": "V1", "role": "root", "aud": "evtwin", "iss": "evtwin", "exp": 2e9}, None, "role"),
])
def test_tokens_signed_with_our_key_but_missing_exp_aud_or_a_known_kid_are_refused(payload, headers, match) -> None:
    with pytest.raises(AuthError, match=match):
        verify_token(KEYS, _signed(payload, headers), now_s=NOW)


def test_the_none_algorithm_is_refused() -> None:
    token = jwt.encode({"sub": "V1", "role": "operator", "aud": "evtwin", "iss": "evtwin", "exp": 2e9}, None,
                       algorithm="none", headers={"kid": KEYS.current})
    with pytest.raises(AuthError):
        verify_token(KEYS, token, now_s=NOW)


def test_an_old_v1_token_gets_a_clear_message() -> None:
    with pytest.raises(AuthError, match="token format v1 is no longer accepted; issue a new one"):
        verify_token(KEYS, "v1.eyJyb2xlIjoib3BlcmF0b3IifQ.c2ln", now_s=NOW)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_strings_never_verify_and_never_crash(text: str) -> None:
    with pytest.raises(AuthError):
        verify_token(KEYS, text, now_s=NOW)


def test_bearer_metadata_is_required_and_parsed() -> None:
    assert bearer_token((("authorization", "Bearer abc"),)) == "abc"
    with pytest.raises(AuthError, match="no credentials"):
        bearer_token((("x-other", "1"),))
    with pytest.raises(AuthError, match="Bearer"):
        bearer_token((("authorization", "Basic abc"),))


def test_the_key_set_is_created_once_private_and_reused(tmp_path) -> None:
    path = tmp_path / "keys" / "auth.secret"
    first = load_or_create_keys(path, now_s=NOW)
    assert load_or_create_keys(path) == first
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["auth.secret"]


def test_a_legacy_hex_secret_file_is_read_as_a_key_set_of_one(tmp_path) -> None:
    path = tmp_path / "auth.secret"
    path.write_text(SECRET.hex() + "\n")
    assert load_keys(path) == KEYS


def test_rotation_keeps_tokens_of_the_previous_key_valid_until_the_stated_time_or_retire(tmp_path) -> None:
    path = tmp_path / "auth.secret"
    before = load_or_create_keys(path, now_s=NOW)
    old_token = issue_token(before, Claims(role="vehicle", sub="V1"), ttl_s=30 * 86_400, now_s=NOW)
    after = rotate_keys(path, now_s=NOW + 10, previous_until_s=NOW + 3600)
    assert after.current != before.current and len(after.keys) == 2
    new_token = issue_token(after, Claims(role="vehicle", sub="V1"), ttl_s=30 * 86_400, now_s=NOW + 10)
    assert jwt.get_unverified_header(new_token)["kid"] == after.current
    assert verify_token(load_keys(path), old_token, now_s=NOW + 60).sub == "V1"  # two keys valid at once
    assert verify_token(load_keys(path), new_token, now_s=NOW + 60).sub == "V1"
    with pytest.raises(AuthError, match="retired"):
        verify_token(load_keys(path), old_token, now_s=NOW + 3601)
    rotate_keys(path, now_s=NOW + 20)  # no stated time: the previous key verifies until retired by hand
    token_of_second_key = new_token
    assert verify_token(load_keys(path), token_of_second_key, now_s=NOW + 10 * 86_400).sub == "V1"
    retired = retire_previous_keys(path)
    assert len(retired.keys) == 1 and path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(AuthError, match="does not hold"):
        verify_token(load_keys(path), token_of_second_key, now_s=NOW + 60)


def test_prediction_calls_need_an_operator_or_the_vehicles_own_token() -> None:
    from serving.deployments import PredictionRefused, check_prediction_call

    def status(token: str | None, vehicle_ids: list[str]) -> str:
        metadata = [("authorization", f"Bearer {token}")] if token else []
        try:
            check_prediction_call(KEYS, metadata, vehicle_ids, NOW)
            return "OK"
        except PredictionRefused as refused:
            return refused.status

    vehicle = _issue(Claims(role="vehicle", sub="V1"))
    gateway = _issue(Claims(role="gateway", sub="depot", vehicles="D3-*"))
    assert status(None, ["V1"]) == "UNAUTHENTICATED"
    assert status("v1.old.token", ["V1"]) == "UNAUTHENTICATED"
    assert status(_issue(Claims(role="operator", sub="ops")), []) == "OK"
    assert status(vehicle, ["V1", "V1"]) == "OK"
    assert status(vehicle, ["V1", "V2"]) == "PERMISSION_DENIED"
    assert status(vehicle, []) == "PERMISSION_DENIED"  # rows of unnamed vehicles
    assert status(gateway, ["D3-1", "D3-2"]) == "OK" and status(gateway, ["D4-1"]) == "PERMISSION_DENIED"
    check_prediction_call(None, [], [], NOW)  # auth off: no keys, no check


def test_a_failed_key_write_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch) -> None:
    import os

    path = tmp_path / "auth.secret"
    before = load_or_create_keys(path, now_s=NOW)

    def disk_full(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="space"):
        rotate_keys(path, now_s=NOW + 1)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["auth.secret"]
    assert load_keys(path) == before


def test_a_running_server_picks_up_a_rotation_from_the_key_file(tmp_path) -> None:
    from serving.auth import KeySetFile

    path = tmp_path / "auth.secret"
    load_or_create_keys(path, now_s=NOW)
    clock = [0.0]
    watched = KeySetFile(path, check_every_s=5.0, clock_s=lambda: clock[0])
    rotated = rotate_keys(path, now_s=NOW + 1)
    token = issue_token(rotated, Claims(role="vehicle", sub="V1"), now_s=NOW + 1)
    with pytest.raises(AuthError, match="does not hold"):  # not re-read yet
        verify_token(watched.current(), token, now_s=NOW + 2)
    clock[0] = 6.0
    assert verify_token(watched.current(), token, now_s=NOW + 2).sub == "V1"
    path.write_text("mangled")
    clock[0] = 12.0
    assert watched.current() == rotated  # an unreadable file keeps the last good key set
