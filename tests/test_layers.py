"""The package's layers (CONTRIBUTING.md, "Layers"): what each may import."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

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


PACKAGE = Path(target_userpilot.__file__).parent
# Bottom to top: a module imports only from its own layer or the ones below (type-only imports
# count too). CONTRIBUTING.md draws the same picture.
LAYERS = (
    {"errors", "kinds", "profiles", "events", "places", "loopback"},
    {"fingerprints", "wire", "emulator"},
    {"run"},
    {"settings", "paths"},
    {"singer"},
    {"target", "extras"},
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imports_of(path: Path) -> set[str]:
    """Every module of the package that `path` imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("target_userpilot.") and is_module(name)}


GRAPH = {module_name(path): imports_of(path) for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    part = module.split(".")[1]
    (index,) = [i for i, layer in enumerate(LAYERS) if part in layer]
    return index


def test_every_module_has_a_layer() -> None:
    assert {name.split(".")[1] for name in GRAPH if "." in name} == set().union(*LAYERS)


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    upward = [
        f"{module} -> {imported}"
        for module, imported_names in GRAPH.items()
        if "." in module
        for imported in sorted(imported_names)
        if layer_of(imported) > layer_of(module)
    ]
    assert upward == []


def test_no_import_circle() -> None:
    def circle_from(start: str) -> list[str] | None:
        path = [start]
        todo = [iter(sorted(GRAPH[start]))]
        seen = {start}
        while todo:
            following = next(todo[-1], None)
            if following is None:
                todo.pop()
                path.pop()
            elif following == start:
                return [*path, start]
            elif following not in seen:
                seen.add(following)
                path.append(following)
                todo.append(iter(sorted(GRAPH[following])))
        return None

    circles = [circle for module in GRAPH if (circle := circle_from(module)) is not None]
    assert circles == []


def sdk_private_imports(path: Path) -> list[str]:
    """The SDK's private modules and names `path` imports (`singer_sdk.helpers._typing`...)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("singer_sdk"):
            names = [*(node.module or "").split("."), *(alias.name for alias in node.names)]
            found += [f"{node.module}: {name}" for name in names if name.startswith("_")]
    return found


def test_the_sdks_private_names_are_imported_only_on_the_singer_side() -> None:
    outside = {
        module_name(path): sdk_private_imports(path)
        for path in PACKAGE.rglob("*.py")
        if path.relative_to(PACKAGE).parts[0] not in {"singer", "target.py"}
    }
    assert {module: names for module, names in outside.items() if names} == {}
    assert sdk_private_imports(PACKAGE / "singer" / "sinks.py")  # the check sees them
