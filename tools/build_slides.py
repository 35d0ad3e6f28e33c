"""Build the defence slide deck: ``make slides``.

A Beamer deck compiled by XeLaTeX (the toolchain of ``make pdf``) into
``_build/slides/defence-slides.pdf``: a title, the question, one slide per chapter with the
chapter's key figure and one sentence carrying its number, and the conclusions.

Nothing on a slide is retyped. Each number is read from the output that the chapter's
notebook stores, by cell id and a pattern (:data:`NUMBERS`), so re-executing a chapter
(``make rerun``) changes the deck; a number that cannot be found stops the build, naming the
cell. Figures are the vector PDFs of ``make figures``
(``_build/figures/<chapter>-<name>.pdf``); those missing or older than their notebook are
exported first, which re-executes their notebooks. ``--draft`` takes the PNG each notebook
stores instead: no re-execution, a deck in seconds, raster figures.

Usage: ``python tools/build_slides.py [--draft] [--figures DIR] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from export_figures import file_stem, needs_export  # noqa: E402

#: ``{name}`` in a slide's text, not a LaTeX group like ``\\begin{itemize}``
PLACEHOLDER = re.compile(r"(?<![A-Za-z])\{(\w+)\}")
EST = r"(-?[\d.]+(?:e[+-]?\d+)? ± [\d.]+(?:e[+-]?\d+)?)"  # a printed "value ± error"


@dataclass(frozen=True)
class Number:
    """A number printed in a stored output: ``pattern``'s first group in cell ``cell`` of
    ``notebook`` (text outputs joined)."""

    notebook: str
    cell: str
    pattern: str


#: Every number on the slides, by the name the slide text uses.
NUMBERS = {
    "critical": Number("ch01_lyapunov_spectrum", "b79a527f", r"\n0\.05\s+" + EST),
    "critical_mf": Number("ch01_lyapunov_spectrum", "b79a527f", r"\n0\.05\s+\S+ ± \S+\s+([\d.]+)"),
    "critical_width": Number("ch01_lyapunov_spectrum", "b79a527f", r"\n0\.05\s+\S+ ± \S+\s+[\d.]+\s+([\d.]+)"),
    "backprop_rate": Number("ch02_adjoint_duality", "94a260bc", r"\n4\.000\s+" + EST),
    "forward_rate": Number("ch02_adjoint_duality", "94a260bc", r"\n4\.000\s+\S+ ± \S+\s+" + EST),
    "median_rate": Number("ch03_backprop_failure", "a028f567", r"growth rate of the median: " + EST),
    "lambda_tied": Number("ch03_backprop_failure", "a028f567", r"lambda_1 = " + EST),
    "truth_160": Number("ch03_backprop_failure", "56b89717", r"dJ_160/dsigma_w = " + EST),
    "lorenz_rho": Number("ch04_adjoint_shadowing", "96355752", r"d<z>/d rho\s+" + EST),
    "nilsas_1000": Number("ch04_adjoint_shadowing", "21dab161", r"T = 1000\s+" + EST),
    "shadow_cat": Number("ch04_adjoint_shadowing", "21dab161", r"shadowing contribution \(N -> infinity\)\s+" + EST),
    "full_cat": Number("ch04_adjoint_shadowing", "resp-defence", r"S \+ U, W = 10 \(exact: 0\)\s+" + EST),
    "full_sol1": Number("ch04_adjoint_shadowing", "resp-defence", r"gamma1, S \+ U / FD\s+" + EST),
    "fd_sol1": Number("ch04_adjoint_shadowing", "resp-defence", r"gamma1, S \+ U / FD\s+\S+ ± \S+ / " + EST),
    "shadow_sol1": Number("ch04_adjoint_shadowing", "resp-defence", r"gamma1, S alone\s+" + EST),
    "full_lorenz": Number("ch04_adjoint_shadowing", "resp-defence", r"d<z>/d rho, S \+ U\s+" + EST),
    "nilsas_16000": Number("ch04_adjoint_shadowing", "21dab161", r"T = 16000\s+" + EST),
    "sliding_k3": Number("ch04_adjoint_shadowing", "21dab161", r"K = 3 minus reference\s+" + EST),
    "ensemble_tau10": Number("ch04_adjoint_shadowing", "21dab161", r"tau = 10 minus reference\s+" + EST),
    "kernel_80": Number("ch05_kernel_differentiation", "9b7019ca", r"T = 80: kernel / finite differences\s+" + EST),
    "fd_80": Number("ch05_kernel_differentiation", "9b7019ca", r"T = 80: kernel / finite differences\s+\S+ ± \S+ / " + EST),
    "backprop_80": Number("ch05_kernel_differentiation", "9b7019ca", r"T = 80: backpropagation mean\s+" + EST),
    "hover": Number("ch06_training_dynamics", "d48f9432", r"alpha = 4: steps with \|alpha S - 2\| <= 0\.05\s+(\S+)"),
    "sharpness_0": Number("ch06_training_dynamics", "d48f9432", r"sharpness at step 0 / step 400 \(2/alpha = 20\)\s+([\d.]+)"),
    "negative_end": Number("ch06_training_dynamics", "d48f9432", r"10-step finite-time exponent at step 0 / 400 \(negative end\)\s+(\S+)"),
    "jvp_1000": Number("ch06_training_dynamics", "d48f9432", r"alpha = 0\.1, T = 1000: ln\|\(dtheta_T/dtheta_0\) v\| / dL/dalpha\s+(\S+)"),
    "ch7_energy": Number("ch07_learning_chaos", "36a8b826", r"one-step models: energy distance to held-out data\s+" + EST),
    "ch7_valid": Number("ch07_learning_chaos", "36a8b826", r"one-step models: valid time \(Lyapunov times\)\s+" + EST),
    "ch7_growth": Number("ch07_learning_chaos", "36a8b826", r"BPTT gradient growth rate, seed 0 \(per time unit\)\s+" + EST),
    "ch7_lambda": Number("ch07_learning_chaos", "36a8b826", r"lambda_1 of model seed 0 \(per time unit\)\s+" + EST),
    "ch7_clipped": Number("ch07_learning_chaos", "36a8b826", r"energy after / before, BPTT, clipped to norm 1\s+" + EST),
    "ch7_truncated": Number("ch07_learning_chaos", "36a8b826", r"energy after / before, truncated BPTT, K = 10\s+" + EST),
    "ch7_kernel": Number("ch07_learning_chaos", "36a8b826", r"energy after / before, kernel, noise 0\.5\s+" + EST),
    "ch7_path": Number("ch07_learning_chaos", "36a8b826", r"energy after / before, path-kernel, noise 0\.5, alpha = 0\.5\s+" + EST),
}


@dataclass(frozen=True)
class Slide:
    title: str
    text: str  # LaTeX, with {name} for the numbers of NUMBERS
    figure: str | None = None  # MyST-NB figure name, e.g. "fig-ch01-phase-diagram"
    notebook: str | None = None  # the notebook that draws it


SLIDES = [
    Slide("The question",
          r"\begin{itemize}"
          r"\item Backpropagation computes the derivative of a loss along one orbit, exactly."
          r"\item In an unstable (chaotic) network that derivative grows like $e^{\lambda_1 T}$:"
          r" gradient explosion (梯度爆炸) is a positive Lyapunov exponent."
          r"\item The derivative of a long-time average still exists. How do we compute it?"
          r"\end{itemize}"),
    Slide("1 Lyapunov spectrum (李雅普诺夫谱): order and chaos",
          r"Deep tanh networks cross from order to chaos where $\chi_1 = 1$: measured at width 500"
          r" ($\sigma_b^2 = 0.05$) at $\sigma_w^2 = {critical}$, against {critical_mf} (mean field)"
          r" and {critical_width} (with the finite-width correction).",
          "fig-ch01-phase-diagram", "ch01_lyapunov_spectrum"),
    Slide(r"2 Backpropagation is the adjoint: it grows at $\lambda_1$",
          r"At $\sigma_w^2 = 4$ backpropagated gradients grow at {backprop_rate} per layer; the"
          r" forward exponent of the same networks is {forward_rate}.",
          "fig-ch02-gradient-growth", "ch02_adjoint_duality"),
    Slide("3 Backpropagation fails on long-time averages",
          r"Per-orbit derivatives of $J_T$ grow at {median_rate} per step ($\lambda_1 = {lambda_tied}$)"
          r" while the derivative they estimate is {truth_160} (central differences, 20,000 orbits).",
          "fig-ch03-per-orbit", "ch03_backprop_failure"),
    Slide("4 Adjoint shadowing (NILSAS)",
          r"On Lorenz-63, NILSAS gives $d\langle z\rangle/d\rho = {lorenz_rho}$ (published: about 1.01),"
          r" with a covector that stays bounded where backpropagation's explodes. On chapter 3's"
          r" tanh network it converges at no width: one orbit's error is a factor $10^{{nilsas_1000}}$"
          r" at 1000 steps and $10^{{nilsas_16000}}$ at 16,000, while truncated adjoints land within"
          r" {sliding_k3} ($K = 3$) and {ensemble_tau10} ($\tau = 10$) of the truth.",
          "fig-ch04-covector", "ch04_adjoint_shadowing"),
    Slide("4 The whole linear response: shadowing plus unstable contribution",
          r"NILSAS computes the shadowing contribution $S$; Ruelle's unstable contribution $U$ comes"
          r" from one more adjoint solution and second derivatives of the map. On the area-preserving"
          r" cat map $S + U = {full_cat}$ (exact: 0; $S$ alone {shadow_cat}). On a 21-dimensional solenoid"
          r" $S + U = {full_sol1}$ against finite differences {fd_sol1}, where $S$ alone is"
          r" {shadow_sol1}; on Lorenz-63 $S + U = {full_lorenz}$.",
          "fig-ch04-contributions", "ch04_adjoint_shadowing"),
    Slide("5 Kernel differentiation",
          r"For the noisy tied network at $T = 80$: kernel differentiation {kernel_80}, finite"
          r" differences {fd_80}; the mean of backpropagation is {backprop_80}.",
          "fig-ch05-draft-smoothing", "ch05_kernel_differentiation"),
    Slide("6 Training is a dynamical system",
          r"784-50-10 network: the sharpness starts at {sharpness_0}; of $\alpha = 2, 4, 8$ only"
          r" $\alpha = 4$ hovers at the edge ($|\alpha S - 2| \le 0.05$, steps {hover}). The negative"
          r" end's finite-time exponent ({negative_end} per step at the start) decays: at"
          r" $\alpha = 0.1$ a derivative through 1000 steps grows only by $e^{{jvp_1000}}$.",
          "fig-ch06-eos", "ch06_training_dynamics"),
    Slide("7 Learning Lorenz-63 from noisy data",
          r"A 995-weight neural map fitted by one-step regression forecasts for {ch7_valid}"
          r" Lyapunov times but runs free at energy distance {ch7_energy} from held-out data;"
          r" BPTT's gradient grows at {ch7_growth} per time unit (its $\lambda_1 = {ch7_lambda}$)."
          r" Fine-tuning every weight on the statistics multiplies the distance by {ch7_kernel}"
          r" (kernel differentiation), {ch7_path} (path-kernel hybrid), {ch7_truncated}"
          r" (truncated BPTT) and {ch7_clipped} (clipped BPTT).",
          "fig-ch07-attractors", "ch07_learning_chaos"),
    Slide("Conclusions",
          r"\begin{itemize}"
          r"\item Exploding gradients are Lyapunov exponents: measured rates {backprop_rate} per"
          r" layer against $\lambda_1 = {forward_rate}$."
          r"\item For long-time averages backpropagation, clipped or truncated, is biased or"
          r" explodes; finite differences measure the derivative ({truth_160})."
          r"\item Adjoint shadowing computes it on hyperbolic systems ({lorenz_rho} on Lorenz-63) but"
          r" converges at no width on the chaotic tanh networks, where biased truncated adjoints do"
          r" better ({sliding_k3} from the truth)."
          r"\item Kernel differentiation computes it with noise ({kernel_80} against {fd_80})."
          r"\item Training is a transient, not a stationary chaotic map: at the draft's rate a"
          r" derivative through 1000 steps grows only by $e^{{jvp_1000}}$."
          r"\item On a network trained on data, kernel differentiation and the hybrid repair the"
          r" climate (distance $\times$ {ch7_path}), but no better than truncated BPTT."
          r"\end{itemize}"),
]


def stored_text(notebook: Path, cell: str) -> str:
    """The text outputs (stream and text/plain) of the cell with id ``cell``, joined."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    for c in nb["cells"]:
        if c.get("id") == cell:
            return "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                           for o in c.get("outputs", []))
    raise LookupError(f"{notebook.name} has no cell with id {cell!r} (a number of the slides lives there)")


def read_numbers(book: Path = ROOT / "book") -> dict[str, str]:
    """Every number of :data:`NUMBERS`, as printed in the stored outputs."""
    values = {}
    for name, spec in NUMBERS.items():
        text = stored_text(book / f"{spec.notebook}.ipynb", spec.cell)
        match = re.search(spec.pattern, text)
        if match is None:
            raise LookupError(f"the number {name!r} is not in the stored output of cell {spec.cell} of "
                              f"{spec.notebook}.ipynb (pattern {spec.pattern!r}); output begins:\n{text[:300]}")
        values[name] = match.group(1)
    return values


def stored_png(notebook: Path, figure: str) -> bytes:
    """The PNG that ``notebook`` stores for the cell whose figure name is ``figure``."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    for c in nb["cells"]:
        if c.get("metadata", {}).get("mystnb", {}).get("figure", {}).get("name") == figure:
            for o in c.get("outputs", []):
                if "image/png" in o.get("data", {}):
                    return base64.b64decode(o["data"]["image/png"])
    raise LookupError(f"{notebook.name} stores no PNG for the figure {figure!r}")


def figure_stem(slide: Slide) -> str:
    return file_stem(ROOT / "book" / f"{slide.notebook}.ipynb", slide.figure)


def latex_number(value: str) -> str:
    """``0.1 ± 0.02`` as ``\\ensuremath{0.1 \\pm 0.02}``: right in text and in mathematics."""
    return r"\ensuremath{" + value.replace("±", r"\pm").replace("->", r"\to") + "}"


def deck_source(values: dict[str, str]) -> str:
    """The deck's LaTeX source."""
    numbers = {k: latex_number(v) for k, v in values.items()}
    frames = []
    for s in SLIDES:
        body = PLACEHOLDER.sub(lambda m: numbers[m.group(1)], s.text)
        if s.figure:
            body = (r"\begin{center}\includegraphics[width=\textwidth,height=0.68\textheight,"
                    r"keepaspectratio]{" + figure_stem(s) + "}\\end{center}\n\n\\small " + body)
        frames.append("\\begin{frame}{" + s.title + "}\n" + body + "\n\\end{frame}")
    return TEMPLATE.replace("%FRAMES%", "\n\n".join(frames))


TEMPLATE = r"""\documentclass[aspectratio=169,11pt]{beamer}
\usepackage{fontspec}
\setsansfont{DejaVu Sans}
\setmainfont{DejaVu Serif}
\usepackage{xeCJK}
\setCJKmainfont{Noto Sans CJK SC}
\setCJKsansfont{Noto Sans CJK SC}
\usepackage{amsmath,amssymb,graphicx}
\setbeamertemplate{navigation symbols}{}
\setbeamertemplate{footline}[frame number]
\title{Backpropagation in unstable neural networks}
\subtitle{不稳定神经网络中的反向传播算法}
\author{Zeyu Xie \and advisor: Angxiu Ni}
\date{Every number on these slides is read from the companion book's computed outputs}
\begin{document}
\begin{frame}\titlepage\end{frame}

%FRAMES%
\end{document}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draft", action="store_true", help="use the PNGs stored in the notebooks (no re-execution)")
    parser.add_argument("--figures", type=Path, default=ROOT / "_build" / "figures", help="where make figures writes")
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "slides")
    args = parser.parse_args(argv)
    for tool in ("xelatex", "latexmk"):
        if shutil.which(tool) is None:
            print(f"make slides needs {tool}: see README, 'The book on paper'", file=sys.stderr)
            return 2
    values = read_numbers()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with_figures = [s for s in SLIDES if s.figure]
    if args.draft:
        for s in with_figures:
            (out / f"{figure_stem(s)}.png").write_bytes(stored_png(ROOT / "book" / f"{s.notebook}.ipynb", s.figure))
    else:
        missing = sorted({s.notebook for s in with_figures
                          if needs_export(ROOT / "book" / f"{s.notebook}.ipynb", [args.figures / f"{figure_stem(s)}.pdf"])})
        if missing:
            print(f"exporting the figures of {', '.join(missing)} (make figures)", flush=True)
            subprocess.run([sys.executable, str(ROOT / "tools" / "export_figures.py"),
                            *[str(ROOT / "book" / f"{m}.ipynb") for m in missing], "--out", str(args.figures)],
                           check=True)
        for s in with_figures:
            shutil.copyfile(args.figures / f"{figure_stem(s)}.pdf", out / f"{figure_stem(s)}.pdf")
    tex = out / "defence-slides.tex"
    tex.write_text(deck_source(values), encoding="utf-8")
    run = subprocess.run(["latexmk", "-xelatex", "-interaction=nonstopmode", "-halt-on-error", tex.name],
                         cwd=out, capture_output=True, text=True)
    if run.returncode != 0:
        print(run.stdout[-3000:], file=sys.stderr)
        return run.returncode
    print(f"{len(SLIDES) + 1} slides: {out / 'defence-slides.pdf'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
