"""A clone is self-contained: nothing the project runs refers to a path outside the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.helpers.vectors import REPO

# The folder beside the repository that the vectors came from, a Python path climbing out of the repository
# (tests/helpers/x.py's parents[2] is the repository), or a machine's own absolute paths.
OUTSIDE = re.compile(r"\.\./shared|\bshared/(fixtures|reference)\b|parents\[[3-9]\]|/work/|/root/")
RUN_BY_THE_PROJECT = ("tests", "scripts", "bench", ".ci")


def test_nothing_the_project_runs_names_a_path_outside_the_repository() -> None:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *RUN_BY_THE_PROJECT],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=60,
    ).stdout.split()
    offenders = []
    for name in files:
        path = REPO / name
        if not path.is_file() or path.suffix in {".json", ".pem"} or path == Path(__file__):  # data, or this test
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{name}:{number}: {line.strip()[:100]}")
    assert files and offenders == []
