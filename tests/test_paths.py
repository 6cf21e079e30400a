"""Start-up checks of the paths the settings name: one sentence naming the setting and path."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from target_userpilot.paths import PathSettingError, check_file, check_folder

if TYPE_CHECKING:
    from collections.abc import Callable


def test_usable_paths_pass_and_nothing_is_created(tmp_path: Path) -> None:
    check_folder("batch_dir", tmp_path / "new" / "batches")
    check_file("dead_letter_path", tmp_path / "new" / "dead.ndjson")
    existing = tmp_path / "dead.ndjson"
    existing.write_text("")
    check_file("dead_letter_path", existing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dead.ndjson"]


@pytest.mark.parametrize(
    ("check", "relative", "error"),
    [
        pytest.param(
            check_folder,
            "file/sub",
            "`setting` is {tmp}/file/sub, which is under a file, not a folder ({tmp}/file is)",
            id="folder-under-a-file",
        ),
        pytest.param(
            check_folder,
            "file",
            "`setting` is {tmp}/file, which is under a file, not a folder",
            id="folder-that-is-a-file",
        ),
        pytest.param(
            check_file,
            "file/x.db",
            "`setting` is {tmp}/file/x.db, which is under a file, not a folder ({tmp}/file is)",
            id="file-under-a-file",
        ),
        pytest.param(
            check_file,
            "folder",
            "`setting` is {tmp}/folder, which is a folder, not a file",
            id="dir",
        ),
    ],
)
def test_unusable_paths(
    tmp_path: Path, check: Callable[[str, Path], None], relative: str, error: str
) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    with pytest.raises(PathSettingError) as caught:
        check("setting", tmp_path / relative)
    assert str(caught.value) == error.replace("{tmp}", str(tmp_path)) + "; set it to a usable path"


def test_under_proc_cannot_be_written() -> None:
    with pytest.raises(PathSettingError, match=r"which cannot be written in /proc \("):
        check_folder("batch_dir", Path("/proc/target-userpilot/batches"))
