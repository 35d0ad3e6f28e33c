"""Export every figure of the book for slides: ``make figures``.

Each notebook in ``book/`` is run top to bottom in a fresh process with matplotlib's
non-interactive Agg backend. After every code cell, the figure the cell drew is saved as

- ``_build/figures/<chapter>-<name>.pdf`` (vector; no creation date, so reruns give the
  same file) and
- ``_build/figures/<chapter>-<name>.png`` (300 dpi),

where ``<name>`` is the cell's MyST-NB figure name (``mystnb: figure: name``) without its
``fig-`` prefix and ``<chapter>`` is the notebook's short name (``ch03`` for
``ch03_backprop_failure.ipynb``, ``corrections`` for ``appendix_corrections.ipynb``),
unless the name already starts with it. Every figure is checked by
:func:`chaosgrad.plotting.figure_problems` (legend text of 9 pt or more, no legend over
data, labelled axes); the command fails, naming each figure and problem, if any check
fails, if a cell draws a figure without a name, or if a cell draws more than one figure.

Usage: ``python tools/export_figures.py [notebook ...] [--out DIR]`` (default: every
notebook in ``book/``, into ``_build/figures``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import multiprocessing
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DPI = 300


def chapter_of(notebook: Path) -> str:
    """``ch03`` for ``ch03_backprop_failure``, ``corrections`` for ``appendix_corrections``."""
    stem = notebook.stem
    return stem.split("_")[0] if stem.startswith("ch") else stem.split("_")[-1]


def file_stem(notebook: Path, name: str) -> str:
    """``ch03-remedies`` for the figure ``fig-ch03-remedies`` of chapter 3."""
    chapter = chapter_of(notebook)
    short = name.removeprefix("fig-").removeprefix(f"{chapter}-")
    return f"{chapter}-{short}"


def stored_png(notebook: Path, figure: str) -> bytes:
    """The PNG that ``notebook`` stores for the cell whose figure name is ``figure`` (the
    figure as the HTML book shows it: tests/test_pdf.py builds the PDF with these in place of
    the vector figures, so that it need not re-execute the notebooks)."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    for c in nb["cells"]:
        if c.get("metadata", {}).get("mystnb", {}).get("figure", {}).get("name") == figure:
            for o in c.get("outputs", []):
                if "image/png" in o.get("data", {}):
                    return base64.b64decode(o["data"]["image/png"])
    raise LookupError(f"{notebook.name} stores no PNG for the figure {figure!r}")


def needs_export(notebook: Path, files: list[Path]) -> bool:
    """Whether ``files`` (figures of ``notebook``) are missing or older than the notebook, so
    that ``make pdf`` and ``make slides`` never take a figure from an earlier version."""
    mtime = notebook.stat().st_mtime
    return any(not f.exists() or f.stat().st_mtime < mtime for f in files)


def export(notebook: Path, out: Path) -> tuple[list[Path], list[str]]:
    """Run ``notebook`` and save each figure it draws; return the files written and the
    problems found (each a sentence naming the figure)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from chaosgrad.plotting import figure_problems

    nb = json.loads(notebook.read_text(encoding="utf-8"))
    namespace: dict[str, object] = {"__name__": "__main__"}
    written, problems = [], []
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for i, cell in enumerate(code):
        source = "".join(cell["source"])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*non-interactive.*cannot be shown")
            exec(compile(source, f"{notebook.name}, code cell {i}", "exec"), namespace)
        figures = [plt.figure(n) for n in plt.get_fignums()]
        if not figures:
            continue
        name = cell["metadata"].get("mystnb", {}).get("figure", {}).get("name")
        if name is None or len(figures) > 1:
            problems.append(f"{notebook.name}, code cell {i}: draws {len(figures)} figure(s)"
                            + ("" if name else " without a mystnb figure name"))
        else:
            stem = out / file_stem(notebook, name)
            figures[0].savefig(stem.with_suffix(".pdf"), bbox_inches="tight", metadata={"CreationDate": None})
            figures[0].savefig(stem.with_suffix(".png"), bbox_inches="tight", dpi=DPI)
            written += [stem.with_suffix(".pdf"), stem.with_suffix(".png")]
            problems += [f"{notebook.name}, {name}: {p}" for p in figure_problems(figures[0])]
        plt.close("all")
    return written, problems


def _export_one(args: tuple[Path, Path]) -> tuple[str, list[Path], list[str], float]:
    notebook, out = args
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the notebooks' own prints
        written, problems = export(notebook, out)
    return notebook.name, written, problems, time.perf_counter() - start


def _one_thread() -> None:
    """Notebooks run side by side, one per core: each with one thread, not all with all."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = "1"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to export (default: book/*.ipynb)")
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "figures")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted((ROOT / "book").glob("*.ipynb"))
    args.out.mkdir(parents=True, exist_ok=True)
    problems = []
    # one process per notebook: a fresh namespace each, and the notebooks run side by side
    workers = max(1, min(len(notebooks), os.cpu_count() or 1))
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_one_thread) as pool:
        for name, written, found, seconds in pool.imap(_export_one, [(nb, args.out) for nb in notebooks]):
            print(f"{name}: {len(written) // 2} figures in {seconds:.0f} s", flush=True)
            problems += found
    if problems:
        print("\nFigures that are not fit for a slide:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    print(f"PDF and {DPI}-dpi PNG of every figure in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
