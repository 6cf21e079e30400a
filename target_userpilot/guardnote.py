"""The deletion guard's allowance, kept on disk until every deletion it allowed was accepted.

`max_deletes_per_run` judges a run by its own input. A run killed between its delete requests
resumes from its last STATE with input that is mostly the deletions no STATE covered yet, so
judged alone the resume would exceed a share limit and never complete. So when the guard lets a
run's deletions go, the count it allowed is written to `batch_dir/deletions-allowed.json`
before the first request; the next run counts that many of its own deletions as allowed
already, and the note is removed by the first run that ends with every deletion accepted.
A note the next run cannot read counts as no note: the guard then judges that run alone.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

NOTE = "deletions-allowed.json"


class GuardNote:
    """The allowance of a run whose deletions may not all have been accepted."""

    def __init__(self, folder: Path) -> None:
        """The note lives in `folder` (`batch_dir`)."""
        self.path = folder / NOTE

    def carried(self) -> int:
        """Deletions an earlier, unfinished run was allowed; 0 without a (readable) note."""
        try:
            value = json.loads(self.path.read_text()).get("deletions")
        except (OSError, ValueError, AttributeError):
            return 0
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    def allow(self, deletions: int) -> None:
        """The guard let `deletions` go: note it (atomically) before any is sent."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{NOTE}.{os.getpid()}")
        partial.write_text(json.dumps({"deletions": deletions}) + "\n")
        partial.replace(self.path)

    def clear(self) -> None:
        """Every allowed deletion was accepted: nothing is carried to the next run."""
        self.path.unlink(missing_ok=True)
