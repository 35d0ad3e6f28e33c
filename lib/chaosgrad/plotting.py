"""One figure and table style for the whole book: white background, readable sans-serif fonts,
no CJK in figures, tables printed whole, and a check that a figure is fit for a slide.

Figures are meant to be lifted into slides for the thesis defence, so text is large and
every axis carries a label with its unit. Chinese belongs in the prose, never in figures
(CJK fonts are not guaranteed on the machines that build the book). In a notebook,
:func:`use_book_style` stores figures as "retina" PNGs: rendered at
``2 * figure.dpi`` = 200 dpi and displayed at the size of a 100-dpi figure, so they stay
sharp on a projector. ``make figures`` exports every figure of the book as vector PDF and
300-dpi PNG and refuses any figure that :func:`figure_problems` objects to.
"""

from __future__ import annotations

import math
import re

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure

__all__ = ["BOOK_STYLE", "MIN_LEGEND_POINTS", "TABLE_STYLE", "figure_problems", "legend_overlaps", "use_book_style"]

#: Smallest legend text, in points, that stays legible when a figure is projected.
MIN_LEGEND_POINTS = 9.0

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
    to pandas (call once per notebook). In an IPython kernel, inline figures become
    "retina" PNGs (twice ``figure.dpi``, with the display size stored beside them)."""
    mpl.rcParams.update(BOOK_STYLE)
    _inline_retina()
    try:
        import pandas as pd
    except ImportError:  # pandas comes with the book's dependencies, not the library's
        return
    for option, value in TABLE_STYLE.items():
        pd.set_option(option, value)


def _inline_retina() -> None:
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):  # plain Python or a terminal IPython
        return
    from matplotlib_inline.backend_inline import set_matplotlib_formats

    set_matplotlib_formats("retina")


def _path_points(line_or_path, transform, spacing: float) -> np.ndarray:
    """Points along a path in display coordinates, at most ``spacing`` pixels apart, so
    that a segment crossing a box is caught even when neither end lies inside it."""
    vertices = np.asarray(transform.transform(line_or_path), dtype=float)
    vertices = vertices[np.isfinite(vertices).all(axis=1)]
    if len(vertices) < 2:
        return vertices
    pieces = [vertices[:1]]
    for a, b in zip(vertices[:-1], vertices[1:]):
        n = max(1, math.ceil(np.hypot(*(b - a)) / spacing))
        pieces.append(a + (b - a) * (np.arange(1, n + 1)[:, None] / n))
    return np.concatenate(pieces)


def _data_points(ax, spacing: float) -> np.ndarray:
    """Display coordinates of everything an axes draws as data: lines (with their markers),
    collections (scatter points, error bars, fills) and patches (bars, histograms)."""
    points = [np.empty((0, 2))]
    for line in ax.get_lines():
        if not line.get_visible():
            continue
        xy = np.column_stack([np.asarray(line.get_xdata(), dtype=float), np.asarray(line.get_ydata(), dtype=float)])
        drawn = line.get_linestyle() not in {"None", "none", "", " "}
        points.append(_path_points(xy, line.get_transform(), spacing) if drawn else
                      line.get_transform().transform(xy))
    for collection in ax.collections:
        if not collection.get_visible():
            continue
        offsets = collection.get_offsets()
        if len(offsets) and collection.get_paths() and len(collection.get_paths()) <= 1:  # markers
            points.append(collection.get_offset_transform().transform(np.asarray(offsets, dtype=float)))
        else:
            for path in collection.get_paths():
                points.append(_path_points(path.vertices, collection.get_transform(), spacing))
    for patch in ax.patches:
        if patch.get_visible():
            points.append(_path_points(patch.get_path().vertices, patch.get_transform(), spacing))
    points = np.concatenate([p for p in points if len(p)]) if any(len(p) for p in points) else points[0]
    return points[np.isfinite(points).all(axis=1)]


def legend_overlaps(fig: Figure, spacing: float = 2.0) -> list[tuple[str, int]]:
    """Where a legend covers data: for every legend of ``fig`` (axes and figure legends),
    the number of drawn data points of any panel that fall inside the legend's box.

    Lines are sampled every ``spacing`` display pixels along each segment (so a line that
    crosses a legend counts even when no vertex lies under it), markers and scatter
    points by their centres, patches along their outlines, and a filled patch (a bar) by
    the points of a 7 x 7 grid over the legend that it contains. The figure is drawn
    once to place the legends.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    spacing : float, optional
        Sampling distance along lines, in display pixels (at ``fig.dpi``).

    Returns
    -------
    list of (str, int)
        ``(legend description, points covered)`` for each legend that covers at least one
        point; empty when no legend covers data.

    See Also
    --------
    figure_problems : every check a book figure must pass.
    """
    fig.canvas.draw()
    found = []
    legends = [(ax, ax.get_legend()) for ax in fig.axes] + [(None, lg) for lg in fig.legends]
    for owner, legend in legends:
        if legend is None or not legend.get_visible():
            continue
        box = legend.get_window_extent().padded(-1.0)
        grid = np.stack(np.meshgrid(np.linspace(box.x0, box.x1, 7), np.linspace(box.y0, box.y1, 7)), -1).reshape(-1, 2)
        covered = 0
        for ax in fig.axes:
            xy = _data_points(ax, spacing)
            inside = (xy[:, 0] > box.x0) & (xy[:, 0] < box.x1) & (xy[:, 1] > box.y0) & (xy[:, 1] < box.y1)
            covered += int(inside.sum())
            for patch in ax.patches:  # a filled bar under the legend is covered inside, not only at its edge
                if patch.get_visible() and patch.get_fill():
                    covered += int(patch.get_path().transformed(patch.get_transform()).contains_points(grid).sum())
        if covered:
            where = "figure legend" if owner is None else f"legend of panel {fig.axes.index(owner)} ({owner.get_title() or 'untitled'})"
            found.append((where, covered))
    return found


def figure_problems(fig: Figure) -> list[str]:
    """What keeps ``fig`` from being a book figure, as readable sentences (empty when it
    passes): a legend with text smaller than :data:`MIN_LEGEND_POINTS`, a legend that covers
    data (:func:`legend_overlaps`), a panel with data but no axis label.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> _ = ax.plot([0, 1], [0, 1], label="y = x")
    >>> _ = ax.set(xlabel="x", ylabel="y")
    >>> _ = ax.legend(loc="upper left", fontsize=7)
    >>> figure_problems(fig)  # doctest: +NORMALIZE_WHITESPACE
    ['legend of panel 0 (untitled): text of 7 pt, below the 9 pt minimum']
    >>> plt.close(fig)
    """
    problems = []
    legends = [(ax, ax.get_legend()) for ax in fig.axes] + [(None, lg) for lg in fig.legends]
    for owner, legend in legends:
        if legend is None:
            continue
        where = "figure legend" if owner is None else f"legend of panel {fig.axes.index(owner)} ({owner.get_title() or 'untitled'})"
        sizes = [text.get_fontsize() for text in legend.get_texts()]
        if legend.get_title().get_text():
            sizes.append(legend.get_title().get_fontsize())
        if sizes and min(sizes) < MIN_LEGEND_POINTS:
            problems.append(f"{where}: text of {min(sizes):g} pt, below the {MIN_LEGEND_POINTS:g} pt minimum")
    problems += [f"{where} covers {n} data points" for where, n in legend_overlaps(fig)]
    for i, ax in enumerate(fig.axes):
        has_data = bool(ax.get_lines() or ax.collections or ax.patches or ax.images)
        if not has_data or not ax.axison or hasattr(ax, "_colorbar"):  # a colorbar is labelled by its own label
            continue
        # a label on any panel sharing the axis counts (shared y axes are labelled once)
        unlabelled = [name for name, axis, shared in [("x", ax.xaxis, ax.get_shared_x_axes()),
                                                      ("y", ax.yaxis, ax.get_shared_y_axes())]
                      if _needs_label(axis) and not any(getattr(other, f"get_{name}label")()
                                                        for other in shared.get_siblings(ax))]
        if unlabelled:
            problems.append(f"panel {i} ({ax.get_title() or 'untitled'}) has data but no {' or '.join(unlabelled)} axis label")
    return problems


def _needs_label(axis) -> bool:
    """A numeric axis needs a label (quantity and unit); an axis whose ticks are names
    (categories, e.g. set with ``set_yticks(positions, names)``) or that shows no tick
    labels does not. Reads the drawn tick labels, so the figure must have been drawn."""
    texts = [t.get_text() for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]
    plain = [re.sub(r"\\mathdefault|\\times|[${}^\s]", "", t).replace("\u2212", "-") for t in texts]
    return bool(texts) and all(re.fullmatch(r"[-+0-9.e]*", t) for t in plain)
