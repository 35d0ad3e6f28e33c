"""`make pdf`: the book through Sphinx's LaTeX builder and XeLaTeX, checked on its text.

Runs where TeX Live is installed (README, "The book on paper"); skipped, saying so, where
``xelatex``, ``latexmk`` or poppler's ``pdftotext``/``pdffonts`` are missing.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from book_config import build_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import build_slides  # noqa: E402
import export_figures  # noqa: E402
import vector_figures  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("xelatex", "latexmk", "pdftotext", "pdffonts", "pdfinfo")

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS),
    reason="the PDF build needs " + ", ".join(t for t in TOOLS if shutil.which(t) is None)
    + " (apt-get install texlive-xetex texlive-latex-extra texlive-lang-chinese latexmk fonts-noto-cjk poppler-utils)",
)


@pytest.fixture(scope="module")
def pdf(tmp_path_factory) -> Path:
    """The three steps of ``make pdf``: Sphinx's LaTeX, the figures swapped for PDFs (here
    stand-ins drawn from the stored PNGs, so the test does not re-execute the notebooks), and
    XeLaTeX through the Makefile Sphinx writes."""
    out = tmp_path_factory.mktemp("pdf")
    config = build_config(out)
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jupyter_book), "build", str(ROOT), "--builder", "latex", "--config", str(config), "--path-output", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    latex = out / "_build" / "latex"
    assert run.returncode == 0, f"LaTeX build failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    figures = out / "figures"
    figures.mkdir()
    for notebook, name in vector_figures.figures_in((latex / "chaosgrad-book.tex").read_text(encoding="utf-8")):
        png = build_slides.stored_png(ROOT / "book" / f"{notebook}.ipynb", name)
        stand_in_pdf(png, figures / f"{export_figures.file_stem(ROOT / 'book' / f'{notebook}.ipynb', name)}.pdf")
    assert vector_figures.main([str(latex / "chaosgrad-book.tex"), "--figures", str(figures)]) == 0
    run = subprocess.run(["make", "-C", str(latex), "all-pdf"], capture_output=True, text=True)
    path = latex / "chaosgrad-book.pdf"
    assert run.returncode == 0 and path.exists(), f"XeLaTeX failed:\n{run.stdout[-4000:]}\n{run.stderr[-2000:]}"
    return path


def stand_in_pdf(png: bytes, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    image = plt.imread(io.BytesIO(png), format="png")
    fig = plt.figure(figsize=(image.shape[1] / 100, image.shape[0] / 100), dpi=100)
    fig.figimage(image)
    fig.savefig(path, format="pdf", metadata={"CreationDate": None})
    plt.close(fig)


def text_of(pdf: Path) -> str:
    return subprocess.run(["pdftotext", "-enc", "UTF-8", str(pdf), "-"], capture_output=True, text=True, check=True).stdout


def test_pdf_has_pages_and_no_unresolved_reference(pdf):
    pages = int(re.search(r"Pages:\s+(\d+)", subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True).stdout).group(1))
    assert pages > 50, pages
    text = text_of(pdf)
    assert "??" not in text, [line for line in text.splitlines() if "??" in line][:5]
    log = pdf.with_suffix(".log").read_text(encoding="utf-8", errors="replace")
    assert "Missing character" not in log, re.findall(r"Missing character: There is no (.) in font ([^!]*)", log)[:10]


def named_figures() -> list[str]:
    """The file stem of every figure the notebooks name (``mystnb: figure: name``)."""
    stems = []
    for notebook in sorted((ROOT / "book").glob("*.ipynb")):
        for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
            name = cell.get("metadata", {}).get("mystnb", {}).get("figure", {}).get("name")
            if name:
                stems.append(export_figures.file_stem(notebook, name))
    return stems


def test_every_figure_is_the_exported_pdf(pdf):
    tex = pdf.with_suffix(".tex").read_text(encoding="utf-8")
    assert len(vector_figures.figures_in(tex)) == 0, "a figure still includes its stored PNG"
    included = re.findall(r"\\sphinxincludegraphics\{\{([\w-]+)\}\.pdf\}", tex)
    expected = named_figures()
    assert len(expected) >= 25 and "ch01-convergence" in expected and "ch06-eos" in expected, expected
    assert sorted(included) == sorted(expected), set(included) ^ set(expected)


def test_chapters_figures_equations_and_citations_come_out(pdf):
    text = text_of(pdf)
    assert re.search(r"^1 Lyapunov spectrum", text, re.M), "chapter 1 of the PDF is not chapter 1 of the book"
    assert re.search(r"^6 Training as a dynamical system", text, re.M), "chapter 6 is not numbered 6"
    assert re.search(r"^[A-C] Corrections to the draft", text, re.M), "the appendices are not lettered"
    assert re.search(r"Fig\. 1\.1: Finite-time Lyapunov exponents", text), "figure caption or numbering missing"
    assert "(1.1)" in text, "no numbered equation"
    assert "[Benettin et al., 1980]" in text, "citations are not resolved author-year"


def test_chinese_terms_are_typeset_in_a_cjk_font(pdf):
    text = text_of(pdf)
    for term in ("不稳定神经网络中的反向传播算法", "李雅普诺夫谱", "协变李雅普诺夫向量", "梯度爆炸"):
        assert term in text, term
    fonts = subprocess.run(["pdffonts", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"NotoS(erif|ans)CJK", fonts), fonts
