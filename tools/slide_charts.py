"""The defence deck's figures, redrawn for the slide from the numbers the book stores.

Each chart is drawn from the printed tables of the executed notebooks (never from a rerun),
at the size it has on the slide and with text large enough to read from the back of a room:
:func:`font_problems` measures every piece of text at projection size and ``make slides``
refuses a chart with any below :data:`MIN_PROJECTED_POINTS`. A chart carries one message,
the one its slide states; the book's own figures (with every panel) stay in the book.

*Projection size.* Beamer's 16:9 page is 160 mm x 90 mm with 11 pt body text; a projector
shows it at the size of a standard 16:9 presentation slide, 13.33 in x 7.5 in (what
presentation software calls a widescreen slide and where its type-size guidance, "no text
under 14 pt", applies), a factor :data:`PROJECTION_SCALE` = 2.12. The charts are drawn at the
width they are placed at (scale 1 on the page), with 10 pt or larger text: about 21 pt
projected, against the body text's 23 pt.

Text inside the figures is English and mathematics only (no CJK fonts are guaranteed on the
machine that builds the deck); the Chinese deck uses the same charts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=True)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from chaosgrad.plotting import BOOK_STYLE, figure_problems  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

#: A beamer 16:9 page (160 mm wide) projected as a 13.33-inch widescreen slide.
PROJECTION_SCALE = 13.333 / (160 / 25.4)
#: The smallest text a chart may carry, in points at projection size.
MIN_PROJECTED_POINTS = 14.0
#: Width and height of a chart on the slide, in inches (the page's text is 5.5 in wide).
CHART_SIZE = (5.3, 2.2)

#: The book's style (:data:`chaosgrad.plotting.BOOK_STYLE`) at the sizes of a slide.
SLIDE_STYLE: dict[str, object] = {
    **BOOK_STYLE,
    "font.size": 10.5,
    "axes.labelsize": 10.5,
    "axes.titlesize": 10.5,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "lines.markersize": 5,
    "legend.frameon": False,
}

EST = re.compile(r"^(-?[\d.]+(?:e[+-]?\d+)?) ± ([\d.]+(?:e[+-]?\d+)?)$")


# ---------------------------------------------------------------- the stored tables


def stored_text(notebook: str, cell: str, book: Path = ROOT / "book") -> str:
    """The text outputs (stream and text/plain) of the cell with id ``cell`` of
    ``book/<notebook>.ipynb``, joined."""
    path = book / f"{notebook}.ipynb"
    nb = json.loads(path.read_text(encoding="utf-8"))
    for c in nb["cells"]:
        if c.get("id") == cell:
            return "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                           for o in c.get("outputs", []))
    raise LookupError(f"{path.name} has no cell with id {cell!r} (a number of the slides lives there)")


def table_rows(notebook: str, cell: str, levels: int = 1) -> dict[str, list[str]]:
    """The rows of a table printed by pandas in a stored output: row label -> cells.

    Cells are separated by two or more spaces (an estimate "0.1 ± 0.02" has single ones).
    With ``levels=2`` (a two-level row index) the label is ``"outer / inner"``; pandas prints
    the outer level once per group, and an indented row takes it from the row above."""
    rows, outer = {}, None
    for line in stored_text(notebook, cell).splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) < 2:
            continue
        if levels == 1:
            rows[cells[0]] = cells[1:]
        elif line.startswith(" "):
            if outer is not None:
                rows[f"{outer} / {cells[0]}"] = cells[1:]
        else:
            outer = cells[0]
            rows[f"{outer} / {cells[1]}"] = cells[2:]
    return rows


def estimate(text: str) -> tuple[float, float]:
    """``"0.80 ± 0.19"`` -> ``(0.80, 0.19)``; a plain number has error 0."""
    match = EST.match(text.strip())
    if match:
        return float(match.group(1)), float(match.group(2))
    try:
        return float(text), 0.0
    except ValueError:
        raise ValueError(f"not a printed estimate: {text!r}") from None


def row(notebook: str, cell: str, label: str, levels: int = 1) -> list[str]:
    """The cells of the row ``label`` of :func:`table_rows`; a missing row names the cell."""
    rows = table_rows(notebook, cell, levels)
    if label not in rows:
        raise LookupError(f"cell {cell} of {notebook}.ipynb prints no row {label!r}; rows: {list(rows)}")
    return rows[label]


# ---------------------------------------------------------------- the check


def placed_text(fig: Figure) -> list[tuple[str, float]]:
    """Every visible, non-empty piece of text in ``fig`` with its size in points."""
    return [(t.get_text(), t.get_fontsize()) for t in fig.findobj(Text)
            if t.get_visible() and t.get_text().strip()]


def font_problems(fig: Figure, placed_width_in: float) -> list[str]:
    """Text of ``fig`` below :data:`MIN_PROJECTED_POINTS` once the figure is placed
    ``placed_width_in`` inches wide on a beamer page and projected (:data:`PROJECTION_SCALE`)."""
    scale = placed_width_in / fig.get_figwidth() * PROJECTION_SCALE
    return [f"{text!r} is {size * scale:.1f} pt projected (minimum {MIN_PROJECTED_POINTS:g})"
            for text, size in placed_text(fig) if size * scale < MIN_PROJECTED_POINTS - 1e-9]


def smallest_projected_points(fig: Figure, placed_width_in: float) -> float:
    scale = placed_width_in / fig.get_figwidth() * PROJECTION_SCALE
    return min(size for _, size in placed_text(fig)) * scale


# ---------------------------------------------------------------- the charts


def _figure() -> tuple[Figure, object]:
    """One axes at the chart's slide size (the style is set by :func:`draw`)."""
    return plt.subplots(figsize=CHART_SIZE, layout="constrained")


def _legend_outside(ax) -> None:
    """The legend right of the axes, where it cannot cover data."""
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))


def _errorbar(ax, x, values, **kw):
    v = np.array([estimate(s) for s in values])
    ax.errorbar(x, v[:, 0], yerr=v[:, 1], capsize=3, **kw)
    return v


def critical_line() -> Figure:
    """Chapter 1: the order-chaos transition of deep tanh networks against the mean field."""
    rows = {float(k): v for k, v in table_rows("ch01_lyapunov_spectrum", "b79a527f").items()
            if re.fullmatch(r"[\d.]+", k)}
    sb = np.array(sorted(rows))
    fig, ax = _figure()
    ax.plot(sb, [float(rows[s][1]) for s in sb], "--", color="0.4", label="mean field")
    ax.plot(sb, [float(rows[s][2]) for s in sb], ":", color="C1", label="+ width correction")
    _errorbar(ax, sb, [rows[s][0] for s in sb], fmt="o", color="C0", label="measured, width 500")
    ax.set_xlabel(r"bias variance $\sigma_b^2$")
    ax.set_ylabel(r"critical $\sigma_w^2$")
    _legend_outside(ax)
    return fig


def adjoint_rates() -> Figure:
    """Chapter 2: backpropagation's growth rate is the forward Lyapunov exponent."""
    rows = {float(k): v for k, v in table_rows("ch02_adjoint_duality", "94a260bc").items()
            if re.fullmatch(r"[\d.]+", k)}
    sw = np.array(sorted(rows))
    fig, ax = _figure()
    ax.axhline(0, color="0.6", lw=1)
    ax.plot(sw, [float(rows[s][2]) for s in sw], "--", color="0.4", label=r"mean field $\frac{1}{2}\ln\chi_1$")
    _errorbar(ax, sw - 0.04, [rows[s][1] for s in sw], fmt="s", color="C1", label=r"forward $\lambda_1$")
    _errorbar(ax, sw + 0.04, [rows[s][0] for s in sw], fmt="o", color="C0", label="backpropagation")
    ax.set_xlabel(r"weight variance $\sigma_w^2$ (width 256)")
    ax.set_ylabel("rate per layer")
    _legend_outside(ax)
    return fig


def per_orbit_growth() -> Figure:
    """Chapter 3: per-orbit derivatives of a long-time average grow like e^(lambda_1 T)."""
    rows = {int(k): v for k, v in table_rows("ch03_backprop_failure", "a028f567").items() if k.isdigit()}
    T = np.array(sorted(rows))
    truth = estimate(re.search(r"= (\S+ ± \S+)", stored_text("ch03_backprop_failure", "56b89717")).group(1))[0]
    fig, ax = _figure()
    for j, (name, color) in enumerate([("10%", "C2"), ("median", "C0"), ("90%", "C3")]):
        _errorbar(ax, T, [rows[t][j] for t in T], fmt="o-", color=color, label=name)
    ax.axhline(np.log(truth), color="k", ls="--", lw=1.2, label="the derivative")
    ax.set_xlabel("run length T (steps)")
    ax.set_ylabel(r"$\ln|dJ_T/d\sigma_w|$")
    _legend_outside(ax)
    return fig


def truncation_bias() -> Figure:
    """Chapter 3: the bias of sliding-window truncation changes sign with the window."""
    rows = table_rows("ch03_backprop_failure", "735168e1", levels=2)
    ks = [int(k.rsplit("= ", 1)[1]) for k in rows if k.startswith("sliding-window truncation / K = ")]
    bias = [rows[f"sliding-window truncation / K = {k}"][-1] for k in ks]
    fig, ax = _figure()
    ax.axhline(0, color="k", lw=1)
    _errorbar(ax, ks, bias, fmt="o-", color="C0", label="sliding-window truncation")
    clipped = rows["adjoint clipped per step / c = 0.01"][-1]
    ax.axhline(estimate(clipped)[0], color="C3", ls="--", label="adjoint clipped per step, c = 0.01")
    ax.set_xlabel("window K (steps)")
    ax.set_ylabel(r"bias of $dJ/d\sigma_w$")
    _legend_outside(ax)
    return fig


def remedies() -> Figure:
    """Chapter 3: test accuracy of the draft's practice and its remedies on one task."""
    rows = table_rows("ch03_backprop_failure", "5220489d")
    names = ["sigmoid, Xavier (the draft)", "tanh, N(0,1)", "tanh, N(0,1) + clipping at 1",
             "tanh, N(0,1) + L2 1e-3", "tanh, N(0,1) + BatchNorm", "tanh, Xavier"]
    short = ["sigmoid (draft)", "tanh N(0,1)", "+ clipping", "+ L2", "+ BatchNorm", "tanh Xavier"]
    fig, ax = _figure()
    v = np.array([estimate(rows[n][3]) for n in names])
    y = np.arange(len(names))[::-1]
    ax.barh(y, v[:, 0], xerr=v[:, 1], color=["0.6", "C3", "C3", "C3", "C1", "C2"], capsize=3)
    ax.axvline(0.25, color="k", ls="--", lw=1)
    ax.set_yticks(y, short)
    ax.set_xlabel("test accuracy (dashed: chance, 4 classes)")
    ax.grid(axis="y", visible=False)
    return fig


def nilsas_error() -> Figure:
    """Chapter 4: adjoint shadowing's error on tanh networks grows with the run length."""
    rows = table_rows("ch04_adjoint_shadowing", "78e98f63", levels=2)
    fig, ax = _figure()
    ax.axhline(0, color="k", lw=1)
    for j, n in enumerate(("32", "64", "128")):
        pts = sorted((int(k.split(" / ")[1]), v[2]) for k, v in rows.items() if k.startswith(f"{n} / "))
        T = np.array([t for t, _ in pts], dtype=float)
        _errorbar(ax, T * (1 + 0.04 * (j - 1)), [e for _, e in pts], fmt="o-", color=f"C{j}", label=f"width {n}")
    ax.set_xscale("log")
    ax.set_xlabel("run length T (steps)")
    ax.set_ylabel(r"$\log_{10}|$NILSAS/FD$ - 1|$")
    _legend_outside(ax)
    return fig


def whole_response() -> Figure:
    """Chapter 4: shadowing plus unstable contribution against the references."""
    cell = ("ch04_adjoint_shadowing", "resp-defence")
    cat = estimate(row(*cell, "cat map: S + U, W = 10 (exact: 0)")[0])
    g0 = [estimate(s) for s in row(*cell, "solenoid: d/d gamma0, S + U / FD")[0].split(" / ")]
    g1 = [estimate(s) for s in row(*cell, "solenoid: d/d gamma1, S + U / FD")[0].split(" / ")]
    g1s = estimate(row(*cell, "solenoid: d/d gamma1, S alone")[0])
    cat_s = estimate(re.search(r"(\S+ ± \S+)", row("ch04_adjoint_shadowing", "21dab161",
                                                  "cat map: shadowing contribution (N -> infinity)")[0]).group(1))
    fig, ax = _figure()
    x = np.arange(3)
    ref = [(0.0, 0.0), g0[1], g1[1]]
    full = [cat, g0[0], g1[0]]
    alone = [cat_s, None, g1s]
    ax.errorbar(x - 0.15, [r[0] for r in ref], yerr=[r[1] for r in ref], fmt="k_", ms=16, capsize=3,
                label="exact / finite differences")
    ax.errorbar(x, [f[0] for f in full], yerr=[f[1] for f in full], fmt="o", color="C0", capsize=3,
                label="S + U")
    xs = [i for i, a in enumerate(alone) if a]
    ax.errorbar(x[xs] + 0.15, [alone[i][0] for i in xs], yerr=[alone[i][1] for i in xs], fmt="x",
                color="C3", capsize=3, label="S alone (shadowing)")
    ax.axhline(0, color="0.6", lw=1)
    ax.set_xticks(x, ["cat map", "solenoid\n" + r"$\gamma_0$", "solenoid\n" + r"$\gamma_1$"])
    ax.set_ylabel("derivative")
    ax.set_xlim(-0.5, 2.5)
    _legend_outside(ax)
    return fig


def divergence_scan() -> Figure:
    """Chapter 5: the divergence method's error bar does not grow as the noise vanishes."""
    rows = {float(k): v for k, v in table_rows("ch05_kernel_differentiation", "div-scan").items()
            if re.fullmatch(r"[\d.]+", k)}
    s = np.array(sorted(rows))
    fig, ax = _figure()
    fd = np.array([estimate(rows[x][4]) for x in s])
    ax.fill_between(s, fd[:, 0] - 2 * fd[:, 1], fd[:, 0] + 2 * fd[:, 1], color="0.85",
                    label=r"finite differences $\pm 2$ s.e.")
    _errorbar(ax, s * 0.94, [rows[x][1] for x in s], fmt="s", color="C1", label="kernel")
    _errorbar(ax, s * 1.06, [rows[x][0] for x in s], fmt="o", color="C0", label="divergence")
    ax.set_xscale("log")
    ax.set_xlabel(r"noise $\sigma$")
    ax.set_ylabel(r"$dJ/d\varepsilon$ (circle map)")
    _legend_outside(ax)
    return fig


def training_spectrum() -> Figure:
    """Chapter 6: the negative end of training's Jacobian spectrum fades."""
    label = "alpha = 0.1: lambda_min at step 0 / 400 / 500 / 600"
    values = [float(v) for v in row("ch06_training_dynamics", "d48f9432", label)[0].split(" / ")]
    steps = [int(t) for t in label.split("at step ")[1].split(" / ")]  # the steps the row names
    fig, ax = _figure()
    ax.plot(steps, values, "o-", color="C0")
    ax.axhline(0, color="k", lw=1)
    ax.set_xlabel(r"training step (gradient descent, $\alpha = 0.1$)")
    ax.set_ylabel("smallest Hessian\n" + r"eigenvalue $\lambda_{\min}$")
    return fig


def fine_tuning() -> Figure:
    """Chapter 7: how fine-tuning on the statistics changes the climate's distance."""
    cell = ("ch07_learning_chaos", "36a8b826")
    labels = [("energy after / before, BPTT, clipped to norm 1", "BPTT, clipped"),
              ("energy after / before, truncated BPTT, K = 10", "truncated BPTT"),
              ("energy after / before, kernel, noise 0.5", "kernel"),
              ("energy after / before, path-kernel, noise 0.5, alpha = 0.5", "path-kernel")]
    fig, ax = _figure()
    v = np.array([estimate(row(*cell, k)[0]) for k, _ in labels])
    y = np.arange(len(labels))[::-1]
    ax.barh(y, v[:, 0], xerr=v[:, 1], color=["C3", "C2", "C0", "C0"], capsize=3)
    ax.axvline(1, color="k", ls="--", lw=1)
    ax.set_yticks(y, [s for _, s in labels])
    ax.set_xlabel("energy distance after / before fine-tuning")
    ax.grid(axis="y", visible=False)
    return fig


#: Every chart of the deck, by the name a slide uses: a function drawing it (in
#: :data:`SLIDE_STYLE`, which :func:`draw` sets) from the stored outputs.
CHARTS: dict[str, object] = {
    "critical-line": critical_line,
    "adjoint-rates": adjoint_rates,
    "per-orbit-growth": per_orbit_growth,
    "truncation-bias": truncation_bias,
    "remedies": remedies,
    "nilsas-error": nilsas_error,
    "whole-response": whole_response,
    "divergence-scan": divergence_scan,
    "training-spectrum": training_spectrum,
    "fine-tuning": fine_tuning,
}


def draw(name: str) -> Figure:
    """The chart ``name`` (:data:`CHARTS`), checked: a sentence per problem raises."""
    with plt.rc_context(SLIDE_STYLE):
        fig = CHARTS[name]()
    problems = figure_problems(fig) + font_problems(fig, CHART_SIZE[0])
    if problems:
        plt.close(fig)
        raise ValueError(f"the slide chart {name!r} is not fit for a slide: " + "; ".join(problems))
    return fig


def save(name: str, out: Path) -> Path:
    """Draw ``name`` and save it as ``out/<name>.pdf`` at its slide size (no creation date)."""
    fig = draw(name)
    path = out / f"chart-{name}.pdf"
    with plt.rc_context(SLIDE_STYLE):
        fig.savefig(path, metadata={"CreationDate": None})
    plt.close(fig)
    return path
