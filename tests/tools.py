"""External command-line tools the tests run for real (promtool, redis-server)."""

from __future__ import annotations

import os
import shutil

import pytest


def required_tool(name: str, install_hint: str) -> str:
    """The path of ``name``; a missing tool fails the test, unless KAYLE_ALLOW_MISSING_TOOLS=1 (then it skips)."""
    found = shutil.which(name)
    if found is not None:
        return found
    message = f"{name} is not installed: {install_hint}"
    if os.environ.get("KAYLE_ALLOW_MISSING_TOOLS") == "1":
        pytest.skip(f"{message} (skipped: KAYLE_ALLOW_MISSING_TOOLS=1)")
    pytest.fail(message)


def promtool() -> str:
    return required_tool(
        "promtool",
        "scripts/test installs it (ensure_promtool: apt-get install --no-install-recommends prometheus)",
    )
