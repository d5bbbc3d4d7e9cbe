"""The token of a Ray we start is a file only its owner can read (Ray 2.60 writes it 0644)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from crystallize_ray.token_file import protect_auth_token


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_missing_token_is_created_readable_by_its_owner_only(home: Path) -> None:
    path = protect_auth_token()
    assert path == home / ".ray" / "auth_token"
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    token = path.read_text()
    assert len(token) == 64 and int(token, 16) >= 0
    assert protect_auth_token() == path and path.read_text() == token  # kept, not replaced


def test_a_token_others_can_read_is_tightened(home: Path) -> None:
    path = home / ".ray" / "auth_token"
    path.parent.mkdir()
    path.write_text("ab" * 32)
    path.chmod(0o644)
    assert protect_auth_token() == path
    assert _mode(path) == 0o600
    assert path.read_text() == "ab" * 32


def test_the_configured_path_is_the_one_protected(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = home / "tokens" / "ray.token"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(elsewhere))
    assert protect_auth_token() == elsewhere
    assert _mode(elsewhere) == 0o600
    assert not (home / ".ray").exists()


@pytest.mark.parametrize("env", [{"RAY_AUTH_TOKEN": "cd" * 32}, {"RAY_AUTH_MODE": "disabled"}])
def test_no_file_is_made_when_the_user_chose_otherwise(home: Path, monkeypatch: pytest.MonkeyPatch, env) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert protect_auth_token() is None
    assert not (home / ".ray").exists()


def test_the_token_of_the_suites_private_ray_is_readable_by_its_owner_only(ray_session: object) -> None:
    import os

    from crystallize_ray.token_file import token_path

    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        pytest.skip("the token is not in a file here (RAY_AUTH_TOKEN set, or token auth turned off)")
    path = token_path()
    assert path.is_file(), "Ray started with token authentication but no token file"
    assert _mode(path) & 0o077 == 0, f"{path} is readable by others"
