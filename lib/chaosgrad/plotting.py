"""One figure style for the whole book: white background, readable sans-serif fonts, no CJK.

Figures are meant to be lifted into slides for the thesis defence, so text is large and
every axis carries a label with its unit. Chinese belongs in the prose, never in figures
(CJK fonts are not guaranteed on the machines that build the book).
"""

from __future__ import annotations

import matplotlib as mpl

__all__ = ["BOOK_STYLE", "use_book_style"]

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


def use_book_style() -> None:
    """Apply :data:`BOOK_STYLE` to matplotlib's global settings (call once per notebook)."""
    mpl.rcParams.update(BOOK_STYLE)
