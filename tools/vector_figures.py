"""Put the vector figures of ``make figures`` into the book's LaTeX: step 2 of ``make pdf``.

Sphinx's LaTeX builder includes each figure as the PNG its notebook stores (a raster at the
notebook's resolution). This rewrites ``_build/latex/chaosgrad-book.tex`` so that every
named figure (``mystnb: figure: name``) is the vector PDF that ``make figures`` exports,
``_build/figures/<chapter>-<name>.pdf``, copied next to the ``.tex``; figures missing there,
or older than their notebook, are exported first (which re-executes their notebooks).
``--draft`` keeps the stored PNGs.

Either way each figure is included by ``\\chaosgradfigure`` (``_config.yml``, the LaTeX
preamble) instead of Sphinx's ``\\sphinxincludegraphics``, which scales every figure to the
text width (a three-panel figure's labels came out at half the size of a single panel's):
every figure is set at one scale of its size as drawn (``\\chaosgradfigurescale``), so its
text has one size throughout the book, and only a figure wider than the text at that scale
is shrunk to the text width, or, where that would shrink it below 0.6 of its drawn size,
turned a quarter with its caption and set along the page's height (the LaTeX log says
which, and how far). The caption is the macro's second argument, so that it turns too.

Usage: ``python tools/vector_figures.py [--draft] [--figures DIR] [TEX]``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from export_figures import file_stem, needs_export  # noqa: E402

#: A figure as Sphinx writes it: the stored PNG (by hash), then its caption and label.
FIGURE = re.compile(
    r"\\sphinxincludegraphics(?:\[[^\]]*\])?\{\{(?P<image>[0-9a-f]+)\}\.png\}"
    r"(?P<between>\s*\\caption\{.*?\}\\label\{\\detokenize\{book/(?P<notebook>[\w]+):(?P<name>fig-[\w-]+)\}\})",
    re.S,
)


def figures_in(tex: str) -> list[tuple[str, str]]:
    """``(notebook, figure name)`` of every named figure in the LaTeX source, in order."""
    return [(m["notebook"], m["name"]) for m in FIGURE.finditer(tex)]


def use_vector_figures(tex: str, stem_path: dict[tuple[str, str], str] | None = None) -> str:
    """``tex`` with each named figure's PNG replaced by the file ``stem_path[(notebook, name)]``
    (a name relative to the ``.tex``, with its extension), or kept where ``stem_path`` is
    ``None``, and included with its caption at the book's one figure scale by
    ``\\chaosgradfigure``."""
    def replace(m: re.Match) -> str:
        path = f"{m['image']}.png" if stem_path is None else stem_path[m["notebook"], m["name"]]
        stem, ext = path.rsplit(".", 1)
        return r"\chaosgradfigure{{" + stem + "}." + ext + "}{" + m["between"] + "}"

    return FIGURE.sub(replace, tex)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tex", nargs="?", type=Path, default=ROOT / "_build" / "latex" / "chaosgrad-book.tex")
    parser.add_argument("--figures", type=Path, default=ROOT / "_build" / "figures")
    parser.add_argument("--draft", action="store_true", help="keep the PNGs the notebooks store")
    args = parser.parse_args(argv)
    source = args.tex.read_text(encoding="utf-8")
    if args.draft:
        args.tex.write_text(use_vector_figures(source), encoding="utf-8")
        print("draft: the PDF keeps the stored PNG figures")
        return 0
    found = figures_in(source)
    stems = {(nb, name): file_stem(ROOT / "book" / f"{nb}.ipynb", name) for nb, name in found}
    missing = sorted({nb for nb, _ in stems
                      if needs_export(ROOT / "book" / f"{nb}.ipynb",
                                      [args.figures / f"{stem}.pdf" for (n, _), stem in stems.items() if n == nb])})
    if missing:
        print(f"exporting the figures of {', '.join(missing)} (make figures)", flush=True)
        subprocess.run([sys.executable, str(ROOT / "tools" / "export_figures.py"),
                        *[str(ROOT / "book" / f"{nb}.ipynb") for nb in missing], "--out", str(args.figures)], check=True)
    for stem in stems.values():
        shutil.copyfile(args.figures / f"{stem}.pdf", args.tex.parent / f"{stem}.pdf")
    args.tex.write_text(use_vector_figures(source, {k: f"{v}.pdf" for k, v in stems.items()}), encoding="utf-8")
    print(f"{len(found)} figures as vector PDF in {args.tex.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
