"""The book's ``_config.yml`` for a test build: stored outputs only, local extensions by absolute path."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def build_config(out: Path) -> Path:
    """Write a copy of ``_config.yml`` into ``out`` that never executes a notebook and finds
    ``_ext`` from anywhere; return its path (for ``jupyter-book build --config``)."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    config["execute"]["execute_notebooks"] = "off"
    config["sphinx"]["local_extensions"] = {name: str(ROOT / path) for name, path in config["sphinx"]["local_extensions"].items()}
    path = out / "_config.yml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path
