"""README, read by a newcomer in ten minutes: its length, where Meltano is, links that work."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
MAX_LINES = 350  # detail goes in docs/; CONTRIBUTING.md says so


def sections() -> list[str]:
    return [line[3:] for line in README.splitlines() if line.startswith("## ")]


def test_readme_fits_its_line_budget() -> None:
    assert len(README.splitlines()) <= MAX_LINES, f"README.md is over {MAX_LINES} lines"


def test_meltano_section_comes_first_and_early() -> None:
    assert sections()[0] == "In a Meltano project"
    assert README.splitlines().index("## In a Meltano project") < 30


def test_every_relative_link_in_readme_and_docs_exists() -> None:
    pages = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
    missing = [
        f"{page.name}: {target}"
        for page in pages
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8"))
        if not (page.parent / target).exists()
    ]
    assert missing == []


def test_readme_links_the_pages_moved_out_of_it() -> None:
    for page in ("docs/performance.md", "docs/reliability.md", "CONTRIBUTING.md"):
        assert f"]({page})" in README


def test_download_recipes_fail_loudly() -> None:
    """A `curl | sed >file` writes an empty file when the download fails; `-f ... -o` does not."""
    curls = [line for line in README.splitlines() if "curl " in line]
    assert curls
    for line in curls:
        assert re.search(r"curl -[a-zA-Z]*f[a-zA-Z]* ", line), line
        assert " -o " in line, line
        assert "|" not in line.split("curl", 1)[1], line
