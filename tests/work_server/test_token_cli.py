"""``yadml-server token create|list|revoke`` and the audit events of the server's command
line (tokens and ``operator create``), on a real SQLite state directory."""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path

import pytest
from sqlmodel import col, select

from work_server.auth import hash_token
from work_server.cli import main
from work_server.db.engine import make_engine, make_sessionmaker, sqlite_url
from work_server.db.models import ApiToken, AuditEvent


def _rows(state_dir: Path) -> tuple[list[ApiToken], list[AuditEvent]]:
    async def go() -> tuple[list[ApiToken], list[AuditEvent]]:
        engine = make_engine(sqlite_url(state_dir))
        try:
            async with make_sessionmaker(engine)() as session:
                tokens = (await session.exec(select(ApiToken))).all()
                events = (await session.exec(select(AuditEvent).order_by(col(AuditEvent.id)))).all()
                return list(tokens), list(events)
        finally:
            await engine.dispose()

    return asyncio.run(go())


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    state = tmp_path / "var"
    monkeypatch.setattr(sys, "stdin", io.StringIO("a long password\n"))
    argv = ["operator", "create", "--state-dir", str(state), "--username", "alice"]
    assert main([*argv, "--password-stdin"]) == 0
    return state


def test_create_list_and_revoke(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    at = ["--state-dir", str(state)]
    argv = ["token", "create", *at, "--operator", "alice", "--scope", "read,jobs"]
    assert main([*argv, "--expires-in", "30d", "--note", "CI"]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert token.startswith("yadml_pat_")
    assert "shown once" in err.lower()
    [row], _ = _rows(state)
    assert row.token_hash == hash_token(token)  # only the hash is stored
    assert row.scopes == ["jobs", "read"]
    assert row.expires_at is not None
    assert abs(row.expires_at - row.created_at - 30 * 86400) < 1

    assert main(["token", "list", *at]) == 0
    listing = capsys.readouterr().out
    assert "alice" in listing
    assert "jobs,read" in listing
    assert "active" in listing
    assert token not in listing

    assert main(["token", "revoke", *at, str(row.id)]) == 0
    assert main(["token", "list", *at, "--operator", "alice"]) == 0
    assert "revoked" in capsys.readouterr().out

    _, events = _rows(state)
    assert [(e.action, e.via, e.client_ip) for e in events] == [
        ("operator.create", "cli", None),
        ("token.create", "cli", None),
        ("token.revoke", "cli", None),
    ]
    assert events[1].detail["owner"] == "alice"


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--operator", "mallory", "--scope", "read"], "no operator 'mallory'"),
        (["--operator", "alice", "--scope", "read,root"], "unknown scope 'root'"),
        (["--operator", "alice", "--scope", ","], "at least one scope"),
        (["--operator", "alice", "--scope", "read", "--expires-in", "30"], "not a duration"),
        (["--operator", "alice", "--scope", "read", "--expires-in", "30s"], "expires between"),
        (["--operator", "alice", "--scope", "read", "--expires-in", "11y"], "not a duration"),
    ],
)
def test_bad_create_arguments_are_refused(
    state: Path, capsys: pytest.CaptureFixture[str], argv: list[str], reason: str
) -> None:
    capsys.readouterr()
    assert main(["token", "create", "--state-dir", str(state), *argv]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert reason in err
    tokens, events = _rows(state)
    assert tokens == []
    assert [e.action for e in events] == ["operator.create"]


def test_revoking_an_unknown_token(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "revoke", "--state-dir", str(state), "42"]) == 1
    assert "no token 42" in capsys.readouterr().err


def test_operator_password_resets_are_audited(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["operator", "create", "--state-dir", str(state), "--username", "alice"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("another password\n"))
    assert main([*argv, "--password-stdin"]) == 1  # exists: nothing recorded
    monkeypatch.setattr(sys, "stdin", io.StringIO("a new password\n"))
    assert main([*argv, "--password-stdin", "--reset"]) == 0
    _, events = _rows(state)
    assert [(e.action, e.target) for e in events] == [
        ("operator.create", "operator:alice"),
        ("operator.password", "operator:alice"),
    ]
