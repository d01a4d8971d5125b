"""Secrets the platform derives or refuses: signed callbacks, salted DICOM UIDs."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.config import Settings


def test_callbacks_refuse_an_empty_or_short_secret() -> None:
    for secret in ("", "short"):
        with pytest.raises(ValidationError, match="MEDIMG_CALLBACK_SECRET"):
            Settings(callback_allowed_hosts=["hooks.example.org"], callback_secret=secret)
    Settings(callback_allowed_hosts=["hooks.example.org"], callback_secret="k" * 32)


def test_uid_salt_is_configured_or_persisted_random(tmp_path: Path) -> None:
    assert Settings(deidentify_uid_salt="fixed", data_dir=tmp_path).uid_salt() == b"fixed"
    first = Settings(data_dir=tmp_path / "a").uid_salt()
    assert len(first) == 64 and first == Settings(data_dir=tmp_path / "a").uid_salt()
    assert first != Settings(data_dir=tmp_path / "b").uid_salt()
    assert (tmp_path / "a" / "secrets" / "deidentify-uid-salt").stat().st_mode & 0o077 == 0
