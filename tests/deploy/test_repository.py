"""A clone is self-contained: nothing the project runs refers to a path outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers.vectors import REPO

# The folder beside the repository that the vectors came from, a Python path climbing out of the repository
# (tests/helpers/x.py's parents[2] is the repository), or a machine's own absolute paths.
OUTSIDE = re.compile(r"\.\./shared|\bshared/(fixtures|reference)\b|parents\[[3-9]\]|/work/|/root/")
RUN_BY_THE_PROJECT = ("tests", "scripts", "bench", ".ci")
CACHES = {"__pycache__", ".pytest_cache", ".hypothesis", ".mypy_cache", ".ruff_cache"}


def test_nothing_the_project_runs_names_a_path_outside_the_repository() -> None:
    # Walk the folders rather than ask git: .ci/run tests a copy of the checkout that has no .git.
    files = [path for folder in RUN_BY_THE_PROJECT for path in sorted((REPO / folder).rglob("*"))
             if path.is_file() and not CACHES.intersection(path.relative_to(REPO).parts)]
    offenders = []
    for path in files:
        name = path.relative_to(REPO)
        if path.suffix in {".json", ".pem"} or path == Path(__file__):  # data, or this test
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{name}:{number}: {line.strip()[:100]}")
    assert files and offenders == []
