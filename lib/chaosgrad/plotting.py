"""One figure and table style for the whole book: white background, readable sans-serif fonts,
no CJK in figures, tables printed whole.

Figures are meant to be lifted into slides for the thesis defence, so text is large and
every axis carries a label with its unit. Chinese belongs in the prose, never in figures
(CJK fonts are not guaranteed on the machines that build the book).
"""

from __future__ import annotations

import matplotlib as mpl

__all__ = ["BOOK_STYLE", "TABLE_STYLE", "use_book_style"]

BOOK_STYLE: dict[str, object] = {
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "savefig.facecolor": "white",
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 100,
    "font.family": "DejaVu Sans",
    "font.size": 12,
    "axes.titlesize": 13,
    "axes.labelsize": 12,
    "legend.fontsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.8,
}


#: pandas display options for tables of results: never wrap a table into column blocks or
#: cut a cell short (the plain-text form of a table is part of what nbval compares, and its
#: layout must not depend on how many digits a rerun prints).
TABLE_STYLE: dict[str, object] = {"display.width": 1000, "display.max_columns": None, "display.max_colwidth": None}


def use_book_style() -> None:
    """Apply :data:`BOOK_STYLE` to matplotlib and, if pandas is installed, :data:`TABLE_STYLE`
    to pandas (call once per notebook)."""
    mpl.rcParams.update(BOOK_STYLE)
    try:
        import pandas as pd
    except ImportError:  # pandas comes with the book's dependencies, not the library's
        return
    for option, value in TABLE_STYLE.items():
        pd.set_option(option, value)
