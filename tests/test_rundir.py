import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from target_userpilot.run.batches import BatchFileError
from target_userpilot.run.rundir import LOCK, PREFIX, RunFolder


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_run_folder_is_named_by_pid_and_removed_with_its_files(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    path = folder.open()
    assert path.name.startswith(f"{PREFIX}{os.getpid()}-")
    (path / "userpilot-users-1.ndjson").write_text("{}\n")
    folder.remove()
    folder.remove()
    assert list(tmp_path.iterdir()) == []


def test_folders_of_dead_runs_go_and_live_ones_stay(tmp_path: Path) -> None:
    killed = tmp_path / f"{PREFIX}{dead_pid()}-abc"  # its lock died with it
    killed.mkdir()
    (killed / LOCK).touch()
    (killed / "userpilot-users-1.ndjson").write_text("{}\n")
    unlocked = tmp_path / f"{PREFIX}{dead_pid()}-def"  # died before taking its lock
    unlocked.mkdir()
    live = tmp_path / f"{PREFIX}{os.getpid()}-ghi"  # held by a live run
    live.mkdir()
    fd = os.open(live / LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    starting = tmp_path / f"{PREFIX}{os.getpid()}-jkl"  # a live run about to take its lock
    starting.mkdir()
    other = tmp_path / "not-ours"
    other.mkdir()
    try:
        folder = RunFolder(tmp_path)
        mine = folder.open()
        assert folder.removed_stale == 2
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [live.name, starting.name, other.name, mine.name]
        )
        folder.remove()
    finally:
        os.close(fd)


def test_an_unusable_batch_dir_is_one_error_naming_the_setting(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(BatchFileError, match="`batch_dir`"):
        RunFolder(tmp_path / "file" / "batches").open()
