"""Build the defence slide deck: ``make slides`` (English) and ``make slides LANG=zh`` (Chinese).

A Beamer deck compiled by XeLaTeX into ``_build/slides/defence-slides.pdf`` (Chinese:
``defence-slides-zh.pdf``), with speaker notes for pdfpc beside it (``.pdfpc``: open the PDF
with ``pdfpc`` and the notes show on the presenter's screen). What the slides say, in both
languages, is :data:`defence_deck.SLIDES`; their figures are :mod:`slide_charts`, redrawn for
the slide.

Nothing on a slide is retyped. Each number is read from the output that the chapter's
notebook stores, by cell id and a pattern (:data:`NUMBERS`), and each chart is drawn from the
tables those outputs print, so re-executing a chapter (``make rerun``) changes the deck and
no notebook runs to build it; a number that cannot be found stops the build, naming the cell.

Usage: ``python tools/build_slides.py [--lang en|zh] [--date TEXT] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import slide_charts  # noqa: E402
from defence_deck import SLIDES, Slide  # noqa: E402
from slide_charts import stored_text  # noqa: E402

#: ``{name}`` in a slide's text: a lower-case name in braces that do not follow a letter, a
#: brace, ``^`` or ``_`` (so not a LaTeX group like ``\\begin{itemize}{ll}`` or ``^{T}``)
PLACEHOLDER = re.compile(r"(?<![A-Za-z\\}^_])\{([a-z][a-z0-9_]*)\}")
EST = r"(-?[\d.]+(?:e[+-]?\d+)? ± [\d.]+(?:e[+-]?\d+)?)"  # a printed "value ± error"
LANGUAGES = ("en", "zh")


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
    "jvp_600": Number("ch06_training_dynamics", "d48f9432", r"alpha = 0\.1, T = 600: ln\|\(dtheta_T/dtheta_0\) v\| / dL/dalpha\s+(\S+)"),
    "ch7_energy": Number("ch07_learning_chaos", "36a8b826", r"one-step models: energy distance to held-out data\s+" + EST),
    "ch7_valid": Number("ch07_learning_chaos", "36a8b826", r"one-step models: valid time \(Lyapunov times\)\s+" + EST),
    "ch7_growth": Number("ch07_learning_chaos", "36a8b826", r"BPTT gradient growth rate, seed 0 \(per time unit\)\s+" + EST),
    "ch7_lambda": Number("ch07_learning_chaos", "36a8b826", r"lambda_1 of model seed 0 \(per time unit\)\s+" + EST),
    "ch7_clipped": Number("ch07_learning_chaos", "36a8b826", r"energy after / before, BPTT, clipped to norm 1\s+" + EST),
    "ch7_truncated": Number("ch07_learning_chaos", "36a8b826", r"energy after / before, truncated BPTT, K = 10\s+" + EST),
    "ch7_kernel": Number("ch07_learning_chaos", "36a8b826", r"energy after / before, kernel, noise 0\.5\s+" + EST),
    "ch7_path": Number("ch07_learning_chaos", "36a8b826", r"energy after / before, path-kernel, noise 0\.5, alpha = 0\.5\s+" + EST),
    "bias_clip": Number("ch03_backprop_failure", "735168e1", r"\n\s+c = 0\.01\s+\d+\s+\S+ ± \S+\s+" + EST),
    "bias_k1": Number("ch03_backprop_failure", "735168e1", r"sliding-window truncation\s+K = 1\s+\d+\s+\S+ ± \S+\s+" + EST),
    "bias_k3": Number("ch03_backprop_failure", "735168e1", r"\n\s+K = 3\s+\d+\s+\S+ ± \S+\s+" + EST),
    "bias_k20": Number("ch03_backprop_failure", "735168e1", r"\n\s+K = 20\s+2000\s+\S+ ± \S+\s+" + EST),
    "acc_normal": Number("ch03_backprop_failure", "5220489d", r"tanh, N\(0,1\)\s+\S+\s+\S+\s+\S+ ± \S+\s+" + EST),
    "acc_clip": Number("ch03_backprop_failure", "5220489d", r"clipping at 1\s+\S+\s+\S+\s+\S+ ± \S+\s+" + EST),
    "acc_bn": Number("ch03_backprop_failure", "5220489d", r"tanh, N\(0,1\) \+ BatchNorm\s+\S+\s+\S+\s+\S+ ± \S+\s+" + EST),
    "acc_xavier": Number("ch03_backprop_failure", "5220489d", r"tanh, Xavier\s+\S+\s+\S+\s+\S+ ± \S+\s+" + EST),
    "nilsas_w16": Number("ch04_adjoint_shadowing", "78dc518c", r"\n16\s+\S+ ± \S+\s+\d+\s+\S+ ± \S+\s+" + EST),
    "nilsas_w32": Number("ch04_adjoint_shadowing", "78dc518c", r"\n32\s+\S+ ± \S+\s+\d+\s+\S+ ± \S+\s+" + EST),
    "nilsas_w64": Number("ch04_adjoint_shadowing", "78dc518c", r"\n64\s+\S+ ± \S+\s+\d+\s+\S+ ± \S+\s+" + EST),
    "nilsas_w128": Number("ch04_adjoint_shadowing", "78dc518c", r"\n128\s+\S+ ± \S+\s+\d+\s+\S+ ± \S+\s+" + EST),
    "lambda_u128": Number("ch04_adjoint_shadowing", "21dab161", r"lambda_u / lambda_u\+1\s+" + EST),
    "lambda_u1_128": Number("ch04_adjoint_shadowing", "21dab161", r"lambda_u / lambda_u\+1\s+\S+ ± \S+ / " + EST),
    "full_tanh": Number("ch04_adjoint_shadowing", "resp-defence", r"median log10 \|\(S \+ U\)/FD - 1\|\s+" + EST),
    "hybrid_alpha": Number("ch05_kernel_differentiation", "9b7019ca", r"hybrid: alpha at the minimum\s+" + EST),
    "kernel_cost": Number("ch05_kernel_differentiation", "9b7019ca", r"cost kernel / FD \(h = 0\.2\), T = 10 / 80\s+(\S+ ± \S+ / \S+ ± \S+)"),
    "circle_div": Number("ch05_kernel_differentiation", "9b7019ca", r"circle map, sigma = 0\.01: divergence / kernel / FD \(h = 0\.02\)\s+" + EST),
    "circle_kernel": Number("ch05_kernel_differentiation", "9b7019ca", r"circle map, sigma = 0\.01: divergence / kernel / FD \(h = 0\.02\)\s+\S+ ± \S+ / " + EST),
    "circle_fd": Number("ch05_kernel_differentiation", "9b7019ca", r"circle map, sigma = 0\.01: divergence / kernel / FD \(h = 0\.02\)\s+\S+ ± \S+ / \S+ ± \S+ / " + EST),
    "tent_fd": Number("ch05_kernel_differentiation", "div-tent", r"finite differences " + EST),
    "parameters": Number("ch06_training_dynamics", "d48f9432", r"parameters of the 784-50-10 network\s+(\S+)"),
    "lmin_0": Number("ch06_training_dynamics", "d48f9432", r"lambda_min at step 0 / 400 / 500 / 600\s+(\S+)"),
    "lmin_600": Number("ch06_training_dynamics", "d48f9432", r"lambda_min at step 0 / 400 / 500 / 600\s+\S+ / \S+ / \S+ / (\S+)"),
    "rho_layer": Number("appendix_corrections", "e30abaf2", r"\nrho\(A\)\s+([\d.]+)"),
    "lambda_alternating": Number("appendix_corrections", "e30abaf2", r"lambda_1 of A, A\^T, A, \.\.\. \(per layer\)\s+(\S+)"),
    "stein_trace": Number("appendix_corrections", "3cfb632d", r"\n1\.2\s+\S+\s+\S+\s+(\S+)"),
    "jac_gap": Number("appendix_corrections", "00bb55a6", r"max \|J - I\|\s+(\S+)"),
    "draft_loss": Number("appendix_corrections", "4420f820", r"labels \(0, 2\)\s+(\S+)"),
    "ce_right": Number("appendix_corrections", "4420f820", r"labels \(0, 2\)\s+\S+\s+(\S+)"),
    "ce_wrong": Number("appendix_corrections", "4420f820", r"labels \(1, 0\)\s+\S+\s+(\S+)"),
}



def read_numbers(book: Path = ROOT / "book") -> dict[str, str]:
    """Every number of :data:`NUMBERS`, as printed in the stored outputs."""
    values = {}
    for name, spec in NUMBERS.items():
        text = stored_text(spec.notebook, spec.cell, book)
        match = re.search(spec.pattern, text)
        if match is None:
            raise LookupError(f"the number {name!r} is not in the stored output of cell {spec.cell} of "
                              f"{spec.notebook}.ipynb (pattern {spec.pattern!r}); output begins:\n{text[:300]}")
        values[name] = match.group(1)
    return values


def latex_number(value: str) -> str:
    """A printed number as the slide sets it, in the text font (also inside mathematics):
    ``-0.1 ± 0.02`` -> ``\\text{−0.1 ± 0.02}``, ``9.819e+06`` -> ``9.819 × 10⁶``, a range
    ``70-190`` with an en dash."""
    text = re.sub(r"(?<=\d)-(?=\d)", "–", value)
    text = re.sub(r"(?<![\w.])-(?=[\d.])", "−", text)
    text = re.sub(r"(\d)e\+?(−?-?)0*(\d+)", lambda m: rf"{m.group(1)}\,×\,10\textsuperscript{{{m.group(2).replace('-', '−')}{m.group(3)}}}", text)
    return r"\text{" + text.replace("->", "→") + "}"


def substitute(text: str, numbers: dict[str, str]) -> str:
    """``text`` with each ``{name}`` replaced by ``numbers[name]``."""
    def number(match: re.Match) -> str:
        if match.group(1) not in numbers:
            raise KeyError(f"a slide uses {{{match.group(1)}}}, which is not a number of NUMBERS")
        return numbers[match.group(1)]
    return PLACEHOLDER.sub(number, text)


NUMBER_TOKEN = re.compile(r"\d+(?:[.,]\d+)*")


def slide_numbers(slide: Slide, lang: str, values: dict[str, str]) -> list[str]:
    """Every number a slide shows or its notes say in ``lang`` (the stored numbers and the
    settings typed in the text, such as widths and step counts), sorted: the same list in
    every language."""
    text = " ".join(substitute(part[lang], values) for part in (slide.title, slide.subtitle, slide.body, slide.notes))
    return sorted(NUMBER_TOKEN.findall(text))


def frame(slide: Slide, lang: str, numbers: dict[str, str]) -> str:
    body = substitute(slide.body[lang], numbers)
    if slide.chart:
        width = slide_charts.CHART_SIZE[0]
        body = (r"\begin{center}\includegraphics[width=" + f"{width}in" + r"]{chart-" + slide.chart
                + r"}\end{center}" + "\n" + r"\vspace{-0.6em}\small " + body)
    subtitle = slide.subtitle[lang]
    head = r"\begin{frame}{" + substitute(slide.title[lang], numbers) + "}" + (f"{{{subtitle}}}" if subtitle else "")
    return head + "\n" + body + "\n" + r"\end{frame}"


def deck_source(values: dict[str, str], lang: str = "en", date: str | None = None) -> str:
    """The deck's LaTeX source in ``lang``."""
    if lang not in LANGUAGES:
        raise ValueError(f"lang must be one of {LANGUAGES}, got {lang!r}")
    numbers = {k: latex_number(v) for k, v in values.items()}
    main = [frame(s, lang, numbers) for s in SLIDES if not s.backup]
    backup = [frame(s, lang, numbers) for s in SLIDES if s.backup]
    template = TEMPLATE.replace("%TITLE%", TITLE[lang]).replace("%DATE%", date or DATE[lang])
    return template.replace("%FRAMES%", "\n\n".join(main) + "\n\n\\appendix\n\n" + "\n\n".join(backup))


def pdfpc_notes(values: dict[str, str], lang: str) -> dict:
    """Speaker notes in pdfpc's format (version 2): one note per page, the title page first."""
    notes = [TITLE_NOTE[lang]] + [substitute(s.notes[lang], values) for s in SLIDES]
    return {"pdfpcFormat": 2, "duration": 25, "disableMarkdown": True,
            "pages": [{"idx": i, "label": str(i + 1), "overlay": 0, "forcedOverlay": False,
                       "hidden": False, "note": note} for i, note in enumerate(notes)]}


TITLE = {
    "en": r"""\title{Backpropagation in unstable neural networks}
\subtitle{不稳定神经网络中的反向传播算法}
\author{Zeyu Xie\\[0.3em]{\small advisor: Angxiu Ni}}
\institute{Bachelor's thesis defence\\Department of Mathematics, Tsinghua University}""",
    "zh": r"""\title{不稳定神经网络中的反向传播算法}
\subtitle{Backpropagation in unstable neural networks}
\author{谢泽宇 (Zeyu Xie)\\[0.3em]{\small 指导教师：倪昂修 (Angxiu Ni)}}
\institute{本科毕业论文答辩\\清华大学数学科学系}""",
}
DATE = {"en": r"\today", "zh": r"\today"}
TITLE_NOTE = {
    "en": "Introduce the thesis: gradients of long-time averages in networks whose gradients explode.",
    "zh": "介绍论文：在梯度爆炸的网络中求长时间平均的梯度。",
}

TEMPLATE = r"""\documentclass[aspectratio=169,11pt]{beamer}
% mathspec loads fontspec; \setallmainfonts sets the text, the maths' digits, Latin and Greek
% letters and \mathrm in one font, so that "$\alpha = 4$" matches the sans-serif text around it
\usepackage{mathspec}
\setallmainfonts(Digits,Latin,Greek){DejaVu Sans}
\setsansfont{DejaVu Sans}
\usepackage{xeCJK}
\setCJKmainfont{Noto Sans CJK SC}
\setCJKsansfont{Noto Sans CJK SC}
% Latin quotes and apostrophes from the Latin font, not full width from the CJK one
\xeCJKDeclareCharClass{Default}{"2018, "2019, "201C, "201D}
\usepackage{amsmath,amssymb,graphicx}
\usepackage{appendixnumberbeamer}
\usetheme{default}
\usecolortheme{dove}
\setbeamercolor{frametitle}{fg=black!85}
\setbeamercolor{alerted text}{fg=red!70!black}
\setbeamertemplate{navigation symbols}{}
\setbeamertemplate{footline}{\hfill\insertframenumber\,/\,\inserttotalframenumber\hspace{1em}\vspace{0.6em}}
\setbeamertemplate{itemize items}{\textbullet}
\setbeamerfont{frametitle}{size=\large,series=\bfseries}
\setbeamerfont{framesubtitle}{size=\footnotesize,series=\mdseries}
%TITLE%
\date{%DATE%}
\begin{document}
\begin{frame}\titlepage\end{frame}

%FRAMES%
\end{document}
"""


def output_name(lang: str) -> str:
    return "defence-slides" + ("" if lang == "en" else f"-{lang}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lang", choices=LANGUAGES, default="en", help="the deck's language")
    parser.add_argument("--date", help="the date on the title page (default: the day it is built)")
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "slides")
    args = parser.parse_args(argv)
    for tool in ("xelatex", "latexmk"):
        if shutil.which(tool) is None:
            print(f"make slides needs {tool}: see README, 'The book on paper'", file=sys.stderr)
            return 2
    values = read_numbers()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in sorted({s.chart for s in SLIDES if s.chart}):
        slide_charts.save(name, out)
    stem = output_name(args.lang)
    (out / f"{stem}.tex").write_text(deck_source(values, args.lang, args.date), encoding="utf-8")
    (out / f"{stem}.pdfpc").write_text(json.dumps(pdfpc_notes(values, args.lang), ensure_ascii=False, indent=1),
                                       encoding="utf-8")
    run = subprocess.run(["latexmk", "-xelatex", "-interaction=nonstopmode", "-halt-on-error", f"{stem}.tex"],
                         cwd=out, capture_output=True, text=True)
    if run.returncode != 0:
        print(run.stdout[-3000:], file=sys.stderr)
        return run.returncode
    print(f"{len(SLIDES) + 1} slides ({sum(s.backup for s in SLIDES)} backup): {out / (stem + '.pdf')}, "
          f"notes for pdfpc: {out / (stem + '.pdfpc')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
