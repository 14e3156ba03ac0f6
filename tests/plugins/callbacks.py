"""A function a forged job names as its callback: it leaves a file behind if it is ever called."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def touch(*args: Any, **kwargs: Any) -> None:
    Path(os.environ["KAYLE_TEST_TOUCHED"]).touch()
