"""The folders and files the settings name, checked before the first record is read.

A path that cannot be used is one sentence naming the setting and the path, at start,
instead of a traceback in the middle of a run. Nothing is created here: a folder that does
not exist yet is judged by the nearest folder that does, and a file by its folder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from target_userpilot.errors import UserFacingError

if TYPE_CHECKING:
    from target_userpilot.settings import Settings


class PathSettingError(UserFacingError):
    """A folder or file named by a setting cannot be used."""

    def __init__(self, setting: str, path: Path, problem: str) -> None:
        """`problem` continues the sentence "`setting` is <path>, which ..."."""
        super().__init__(f"`{setting}` is {path}, which {problem}; set it to a usable path")


def check_paths(settings: Settings) -> None:
    """Raise PathSettingError for the first unusable path the run would write to."""
    check_folder("batch_dir", settings.batch_dir)
    if settings.dry_run:
        check_folder("dry_run_dir", settings.dry_run_dir)
    if settings.on_invalid_record == "dead_letter":
        check_file("dead_letter_path", settings.dead_letter_path)
    store = settings.fingerprint_store_path
    # Only a SQLite store the user named: the default folder is the store's own to create.
    opened = settings.send_only_changes and not (settings.dry_run and settings.resend_all)
    if store is not None and opened and settings.fingerprint_store_url is None:
        check_file("fingerprint_store_path", store)


def check_folder(setting: str, path: Path) -> None:
    """A folder that exists and takes new files, or that can be created."""
    existing = _nearest_existing(path)
    if not existing.is_dir():
        where = "" if existing == path else f" ({existing} is)"
        raise PathSettingError(setting, path, f"is under a file, not a folder{where}")
    _probe(setting, path, existing)


def check_file(setting: str, path: Path) -> None:
    """A file that exists and can be appended to, or that can be created."""
    if path.is_dir():
        raise PathSettingError(setting, path, "is a folder, not a file")
    if path.exists():
        if not path.is_file():
            raise PathSettingError(setting, path, "is not a regular file")
        if not os.access(path, os.W_OK):
            raise PathSettingError(setting, path, "cannot be written (permission denied)")
        return
    existing = _nearest_existing(path.parent)
    if not existing.is_dir():
        raise PathSettingError(setting, path, f"is under a file, not a folder ({existing} is)")
    _probe(setting, path, existing)


def _nearest_existing(path: Path) -> Path:
    """`path` itself or its nearest ancestor that exists."""
    path = Path(os.path.abspath(path))  # noqa: PTH100 - `resolve` would follow links
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _probe(setting: str, path: Path, folder: Path) -> None:
    """Create and remove a file in `folder`: the one test that every file system answers."""
    try:
        handle, probe = tempfile.mkstemp(prefix=".target-userpilot-check-", dir=folder)
    except OSError as exc:
        where = "" if folder in (path, path.parent) else f" in {folder}"
        raise PathSettingError(
            setting, path, f"cannot be written{where} ({exc.strerror or exc})"
        ) from exc
    os.close(handle)
    Path(probe).unlink()
