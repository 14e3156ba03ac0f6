"""``kayle-webhooks`` in this process, its output captured."""

from __future__ import annotations

import pytest

from kayle_webhooks.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Exit status, standard output and standard error of ``kayle-webhooks ARGV``."""
    capsys.readouterr()
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err
