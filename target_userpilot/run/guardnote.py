"""The deletion guard's allowance, kept on disk until every deletion it allowed was accepted.

`max_deletes_per_run` judges a run by its own input. A run killed between its delete requests
resumes from its last STATE with input that is mostly the deletions no STATE covered yet, so
judged alone the resume would exceed a share limit and never complete. So when the guard lets a
run's deletions go, the ids it allowed are noted in `batch_dir` before the first request; the
next run of the same account counts those of its own deletions as allowed already, and the note
is removed by the first run that ends with every deletion accepted.

The note names ids, not a count: a later run that deletes other profiles (a changed source, a
wrong `deleted_property`) gets no allowance from it and is judged alone, as is a run of another
account sharing `batch_dir` (one note per account). Ids are kept as short digests: the note
holds no personal data. A note that cannot be read counts as no note.
"""

from __future__ import annotations

import json
import os
from hashlib import blake2b
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path


def _digest(text: str) -> str:
    # 64 bits: a false match among a run's deletions is ~n²/2^65, nil at any real size.
    return blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


class GuardNote:
    """The deletions allowed to a run of one account that may not all have been accepted."""

    def __init__(self, folder: Path, account: str) -> None:
        """The note lives in `folder` (`batch_dir`), one per `account` (host and key hash)."""
        self.path = folder / f"deletions-allowed-{_digest(account)}.json"

    def carried(self, pending: Mapping[str, Iterable[str]]) -> int:
        """How many of `pending` (kind -> ids) an earlier, unfinished run was allowed."""
        noted = self._read()
        return sum(
            1
            for kind, ids in pending.items()
            if kind in noted
            for profile_id in ids
            if _digest(profile_id) in noted[kind]
        )

    def allow(self, allowed: Mapping[str, Iterable[str]]) -> None:
        """The guard let these deletions (kind -> ids) go: note them (atomically) before any."""
        note = {kind: sorted({_digest(i) for i in ids}) for kind, ids in allowed.items()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        partial.write_text(json.dumps(note) + "\n")
        partial.replace(self.path)

    def clear(self) -> None:
        """Every allowed deletion was accepted: nothing is carried to the next run."""
        self.path.unlink(missing_ok=True)

    def _read(self) -> dict[str, set[str]]:
        try:
            note = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(note, dict):
            return {}
        return {
            kind: {d for d in digests if isinstance(d, str)}
            for kind, digests in note.items()
            if isinstance(digests, list)
        }
