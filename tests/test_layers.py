"""The package's layers (CONTRIBUTING.md, "Layers"): what each may import."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import target_userpilot.run

RUN_MODULES = sorted(
    module.name
    for module in pkgutil.walk_packages(target_userpilot.run.__path__, "target_userpilot.run.")
)

IMPORT_THE_RUN = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def test_the_run_loads_neither_the_sdk_nor_requests() -> None:
    assert "target_userpilot.run.pipeline" in RUN_MODULES
    loaded = subprocess.run(
        [sys.executable, "-c", IMPORT_THE_RUN, *RUN_MODULES],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    top_level = set(json.loads(loaded.stdout))
    assert "target_userpilot" in top_level
    assert not top_level & {"singer_sdk", "requests", "requests_toolbelt"}
