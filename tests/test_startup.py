"""`evtwin serve` start-up refusals, run-relative default paths, private checkpoint files, key CLI."""
from __future__ import annotations

import os
from pathlib import Path

import jwt
import pytest

from configs.settings import ServingConfig, load_config
from serving.app import resolve_run_paths
from serving.auth import load_keys, verify_token
from serving.cli import main
from serving.server import startup_refusals
from twins.store import CheckpointStore


def _secret(tmp_path: Path, mode: int) -> Path:
    path = tmp_path / "auth.secret"
    path.write_text("ab" * 32)
    path.chmod(mode)
    return path


def test_a_secret_file_others_can_read_is_refused_naming_the_file_and_mode(tmp_path) -> None:
    path = _secret(tmp_path, 0o644)
    reasons = startup_refusals(ServingConfig(auth_secret_path=str(path)))
    assert len(reasons) == 1 and str(path) in reasons[0] and "644" in reasons[0] and "chmod 600" in reasons[0]
    path.chmod(0o600)
    assert startup_refusals(ServingConfig(auth_secret_path=str(path))) == []


def test_plaintext_on_a_non_loopback_address_and_auth_off_are_refused(tmp_path) -> None:
    path = str(_secret(tmp_path, 0o600))
    for host in ("0.0.0.0", "::", "10.1.2.3", "evtwin.example.com"):
        [reason] = startup_refusals(ServingConfig(host=host, auth_secret_path=path))
        assert "plaintext" in reason and host in reason
    for host in ("127.0.0.1", "localhost", "::1"):
        assert startup_refusals(ServingConfig(host=host, auth_secret_path=path)) == []
    tls = ServingConfig(host="0.0.0.0", auth_secret_path=path, tls_cert_path="c.pem", tls_key_path="k.pem")
    assert startup_refusals(tls) == []
    [reason] = startup_refusals(ServingConfig(require_auth=False, auth_secret_path=path))
    assert "auth is off" in reason


def test_evtwin_serve_refuses_an_unsafe_start_unless_insecure(tmp_path, capsys) -> None:
    path = _secret(tmp_path, 0o640)
    code = main(["serve", "--backend", "memory", "--run", str(tmp_path / "run"), "--port", "0",
                 "--set", f"serving.auth_secret_path={path}", "--set", "serving.host=0.0.0.0"])
    assert code == 2
    printed = capsys.readouterr().err
    assert "refused" in printed and "640" in printed and "plaintext" in printed and "--insecure" in printed


def test_default_secret_and_checkpoint_paths_resolve_against_the_run(tmp_path) -> None:
    config = resolve_run_paths(load_config(), tmp_path / "run")
    assert config.serving.auth_secret_path == str(tmp_path / "run" / "keys" / "auth.secret")
    assert config.twins.checkpoint_uri == str(tmp_path / "run" / "checkpoints")
    explicit = load_config(overrides=["serving.auth_secret_path=/etc/evtwin/keys", "twins.checkpoint_uri=s3://b/c"])
    kept = resolve_run_paths(explicit, tmp_path / "run")
    assert kept.serving.auth_secret_path == "/etc/evtwin/keys" and kept.twins.checkpoint_uri == "s3://b/c"


def test_checkpoints_are_private_and_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch) -> None:
    store = CheckpointStore(str(tmp_path / "ckpt"))
    store.put("V1", b"state")
    [written] = list((tmp_path / "ckpt").iterdir())
    assert written.stat().st_mode & 0o777 == 0o600

    def full_disk(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="space"):
        store.put("V1", b"new state")
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == [written.name]
    assert store.get("V1") == b"state"  # the previous checkpoint is intact
    monkeypatch.setattr(os, "replace", lambda *_: (_ for _ in ()).throw(OSError(30, "Read-only file system")))
    with pytest.raises(OSError, match="Read-only"):
        store.put("V2", b"state")
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == [written.name]


def _cli(run: Path, command: str, *args: str) -> list[str]:
    return ["keys", command, "--run", str(run), *args]


def test_the_token_command_refuses_never_expiring_and_wildcard_tokens(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert main(_cli(run, "token", "--vehicle", "V1", "--ttl-days", "0")) == 2
    assert "must expire" in capsys.readouterr().err
    assert main(_cli(run, "token", "--vehicle", "V1", "--ttl-days", "400")) == 2
    assert "token_max_ttl_days" in capsys.readouterr().err
    assert main(_cli(run, "token", "--gateway", "g", "--vehicles", "*")) == 2
    assert "--allow-wildcard" in capsys.readouterr().err
    assert main(_cli(run, "token", "--gateway", "g", "--vehicles", "*", "--allow-wildcard")) == 0
    capsys.readouterr()
    assert main(_cli(run, "token", "--operator", "alice", "--ttl-days", "1")) == 0
    token = capsys.readouterr().out.strip()
    path = run / "keys" / "auth.secret"
    assert path.stat().st_mode & 0o777 == 0o600
    claims = verify_token(load_keys(path), token, now_s=jwt.decode(token, options={"verify_signature": False})["iat"])
    assert claims.may_read() and not claims.may_write("V1")


def test_keys_rotate_adds_a_current_key_and_retire_drops_the_previous(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert main(_cli(run, "init")) == 0
    path = run / "keys" / "auth.secret"
    first = load_keys(path)
    assert main(_cli(run, "rotate", "--previous-until", "2099-01-01T00:00:00Z")) == 0
    rotated = load_keys(path)
    assert rotated.current != first.current and {k.kid for k in rotated.keys} == {first.current, rotated.current}
    assert next(k for k in rotated.keys if k.kid == first.current).retire_at_s == 4_070_908_800
    assert main(_cli(run, "rotate", "--retire")) == 0
    assert [k.kid for k in load_keys(path).keys] == [rotated.current]


def test_client_commands_take_the_run_whose_key_set_mints_the_local_token() -> None:
    from serving.cli import build_parser
    from serving.commands import cmd_alerts, cmd_stream, cmd_twin

    parser = build_parser()
    alerts = parser.parse_args(["alerts", "--run", "runs/x", "--follow"])
    twin = parser.parse_args(["twin", "V1", "--run", "runs/x", "--json"])
    stream = parser.parse_args(["stream", "--run", "runs/x"])
    assert (alerts.func, alerts.run, alerts.follow) == (cmd_alerts, "runs/x", True)
    assert (twin.func, twin.run, twin.vehicle_id, twin.json) == (cmd_twin, "runs/x", "V1", True)
    assert (stream.func, stream.run) == (cmd_stream, "runs/x")
