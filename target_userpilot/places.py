"""Where the target keeps files of its own when no setting names a place.

Meltano tells a plugin its project through `MELTANO_PROJECT_ROOT`. There, the target's files go
to the project's `.meltano/target-userpilot/` folder: Meltano's own `.gitignore` covers
`.meltano/`, so records (dead letters, dry-run files) never land in the project's tracked files.
"""

from __future__ import annotations

import os
from pathlib import Path

PLUGIN_DIR = "target-userpilot"


def meltano_plugin_dir() -> Path | None:
    """`$MELTANO_PROJECT_ROOT/.meltano/target-userpilot` when Meltano runs the target, else None."""
    project_root = os.environ.get("MELTANO_PROJECT_ROOT")
    return Path(project_root) / ".meltano" / PLUGIN_DIR if project_root else None


def default_path(name: str, *, elsewhere: Path) -> Path:
    """`name` in the Meltano project's plugin folder; `elsewhere` when not run by Meltano."""
    plugin_dir = meltano_plugin_dir()
    return plugin_dir / name if plugin_dir is not None else elsewhere
