"""Progress bars for long runs: shown in an interactive terminal, never in stored outputs."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm import tqdm

__all__ = ["progress_range"]


def progress_range(n: int, enabled: bool | None = None, desc: str | None = None) -> Iterable[int]:
    """``range(n)``, wrapped in a tqdm bar when ``enabled``.

    ``enabled=None`` (the default everywhere in chaosgrad) shows the bar only when standard
    error is an interactive terminal, so executed notebooks and CI logs stay free of
    progress output. Pass ``progress=True`` to an algorithm to see the bar in a notebook.
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return range(n)
    return tqdm(range(n), desc=desc, leave=False)
