"""The state directory's RFC 7217 secret (``dispatcher/secret.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardnet.common.config import ConfigError
from shardnet.dispatcher.secret import stable_secret


def test_made_once_then_read_back(tmp_path: Path) -> None:
    secret, warning = stable_secret(str(tmp_path / "d"), "sntap0")
    assert warning is None and len(bytes.fromhex(secret)) == 16
    assert stable_secret(str(tmp_path / "d"), "sntap0") == (secret, None)
    assert stable_secret(str(tmp_path / "d"), "sntap1")[0] != secret  # one per link
    assert not [p for p in (tmp_path / "d").iterdir() if p.suffix == ".tmp"]


def test_a_directory_that_cannot_be_made_gives_a_key_for_this_run_and_a_warning(
    tmp_path: Path,
) -> None:
    (tmp_path / "file").write_text("")
    secret, warning = stable_secret(str(tmp_path / "file" / "d"), "sntap0")
    assert len(bytes.fromhex(secret)) == 16
    assert warning is not None and "will change at the next start" in warning


@pytest.mark.parametrize("text", ["", "zz", "ab" * 8 + "a", "ab" * 15])
def test_a_file_without_a_valid_key_is_an_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "sntap0.secret").write_text(text)
    with pytest.raises(ConfigError, match="holds no secret"):
        stable_secret(str(tmp_path), "sntap0")
