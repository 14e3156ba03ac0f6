"""``keys new`` never overwrites, never writes through a planted link, and says why in one line."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli


def keys_new(capsys: pytest.CaptureFixture[str], directory: Path, kid: str = "k1") -> tuple[int, str, str]:
    return run_cli(capsys, "keys", "new", "--kid", kid, "--bits", "2048", "--dir", str(directory))


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("existing", ["k1.pem", "k1.json"])
def test_keys_new_over_an_existing_key_file_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], existing: str
) -> None:
    (tmp_path / existing).write_text("the operator's key")

    status, _, err = keys_new(capsys, tmp_path)

    assert status == 2 and "already exists" in one_line(err)
    assert [p.name for p in tmp_path.iterdir()] == [existing]
    assert (tmp_path / existing).read_text() == "the operator's key"


@pytest.mark.parametrize("victim_exists", [True, False], ids=["to a file", "dangling"])
def test_keys_new_does_not_write_through_a_planted_symlink(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], victim_exists: bool
) -> None:
    keys, victim = tmp_path / "keys", tmp_path / "victim"
    keys.mkdir()
    if victim_exists:
        victim.write_text("not yours")
    (keys / "k1.pem").symlink_to(victim)

    status, _, err = keys_new(capsys, keys)

    assert status == 2 and "k1.pem" in one_line(err) and "already exists" in err
    assert victim.read_text() == "not yours" if victim_exists else not victim.exists()
    assert (keys / "k1.pem").is_symlink()


def test_keys_new_with_a_file_for_its_directory_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "keys").write_text("a file")
    monkeypatch.setenv("KAYLE_KEY_DIR", str(tmp_path / "keys"))  # --dir is checked by click already

    status, _, err = run_cli(capsys, "keys", "new", "--kid", "k1", "--bits", "2048")

    assert status == 2 and one_line(err).endswith(f"{tmp_path / 'keys'}: exists and is not a directory")
    assert (tmp_path / "keys").read_text() == "a file"


def test_keys_new_writes_mode_0600_whatever_the_umask(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    previous = os.umask(0)
    try:
        status, out, _ = keys_new(capsys, tmp_path / "keys")
    finally:
        os.umask(previous)
    assert status == 0 and "mode 0600" in out
    assert stat.S_IMODE((tmp_path / "keys" / "k1.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700


def test_keys_list_shows_a_key_others_can_read_with_its_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys_new(capsys, tmp_path)
    (tmp_path / "k1.pem").chmod(0o644)

    status, out, _ = run_cli(capsys, "keys", "list", "--dir", str(tmp_path))

    assert status == 0
    path = tmp_path / "k1.pem"
    assert f"WARNING: {path}: private key file with mode 0644: its group and every user can read it" in out
    assert f"fix: chmod 600 {path}" in out
