"""Credentials: tokens are bound to their holder, forged or expired ones are refused."""
from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings, strategies as st

from serving.auth import AuthError, Claims, bearer_token, issue_token, load_or_create_secret, verify_token

SECRET = b"s" * 32


def test_a_vehicle_token_writes_only_its_own_vehicle_and_reads_nothing() -> None:
    claims = verify_token(SECRET, issue_token(SECRET, Claims(role="vehicle", sub="V1")), now_s=0)
    assert claims.may_write("V1")
    assert not claims.may_write("V10")
    assert not claims.may_read()


def test_a_gateway_token_writes_the_vehicles_its_pattern_matches() -> None:
    claims = verify_token(SECRET, issue_token(SECRET, Claims(role="gateway", sub="depot", vehicles="D3-*")), now_s=0)
    assert claims.may_write("D3-0001") and not claims.may_write("D4-0001")
    assert not claims.may_read()


def test_an_operator_reads_and_writes() -> None:
    claims = verify_token(SECRET, issue_token(SECRET, Claims(role="operator", sub="ops")), now_s=0)
    assert claims.may_read() and claims.may_write("anything")


def test_a_gateway_without_a_pattern_is_refused_at_issue() -> None:
    with pytest.raises(ValueError, match="pattern"):
        issue_token(SECRET, Claims(role="gateway", sub="depot"))


def test_changing_the_claims_breaks_the_signature() -> None:
    token = issue_token(SECRET, Claims(role="vehicle", sub="V1"))
    version, body, signature = token.split(".")
    document = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    document["role"] = "operator"
    forged_body = base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()
    with pytest.raises(AuthError, match="signature"):
        verify_token(SECRET, f"{version}.{forged_body}.{signature}", now_s=0)


def test_an_expired_token_is_refused() -> None:
    token = issue_token(SECRET, Claims(role="vehicle", sub="V1", exp=100))
    assert verify_token(SECRET, token, now_s=99).sub == "V1"
    with pytest.raises(AuthError, match="expired"):
        verify_token(SECRET, token, now_s=101)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_strings_never_verify_and_never_crash(text: str) -> None:
    with pytest.raises(AuthError):
        verify_token(SECRET, text, now_s=0)


def test_bearer_metadata_is_required_and_parsed() -> None:
    assert bearer_token((("authorization", "Bearer abc"),)) == "abc"
    with pytest.raises(AuthError, match="no credentials"):
        bearer_token((("x-other", "1"),))
    with pytest.raises(AuthError, match="Bearer"):
        bearer_token((("authorization", "Basic abc"),))


def test_the_secret_is_created_once_private_and_reused(tmp_path) -> None:
    path = tmp_path / "keys" / "auth.secret"
    first = load_or_create_secret(path)
    assert load_or_create_secret(path) == first
    assert path.stat().st_mode & 0o777 == 0o600
