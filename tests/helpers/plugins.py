"""Handler plugins for the tests: the example plugin's folder, and entry points without installing anything."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.vectors import REPO

EXAMPLE_PLUGIN = REPO / "examples" / "kayle_example_plugin"
EXAMPLE_MODULE = "kayle_example_plugin.handlers"


def entry_point_dir(directory: Path, name: str, target: str) -> Path:
    """A folder that, on ``sys.path``/``PYTHONPATH``, advertises ``target`` in the handlers' entry-point group
    (the metadata ``pip install`` would write), so plugin discovery is tested without touching the venv."""
    info = directory / f"kayle_test_{name}-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: kayle-test-{name}\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[kayle_webhooks.handlers]\n{name} = {target}\n")
    return directory
