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
import warnings
from pathlib import Path

import pytest
from book_config import build_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import export_figures  # noqa: E402
import vector_figures  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("xelatex", "latexmk", "pdftotext", "pdffonts", "pdfinfo")

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS),
    reason="the PDF build needs " + ", ".join(t for t in TOOLS if shutil.which(t) is None)
    + " (apt-get install texlive-xetex texlive-latex-extra texlive-fonts-recommended texlive-lang-chinese latexmk"
    " fonts-noto-cjk poppler-utils)",
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
        png = export_figures.stored_png(ROOT / "book" / f"{notebook}.ipynb", name)
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

    from PIL import Image

    # the size the figure was drawn at (the PNG's resolution, 200 dpi), as the vector PDF has
    dpi = round(Image.open(io.BytesIO(png)).info.get("dpi", (200, 200))[0])
    image = plt.imread(io.BytesIO(png), format="png")
    fig = plt.figure(figsize=(image.shape[1] / dpi, image.shape[0] / dpi), dpi=dpi)
    fig.figimage(image)
    fig.savefig(path, format="pdf", dpi=dpi, metadata={"CreationDate": None})
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
    included = re.findall(r"\\chaosgradfigure\{\{([\w-]+)\}\.pdf\}", tex)
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
    assert "[Benettin et al. 1980]" in text, "citations are not resolved author-year"


def test_chinese_terms_are_typeset_in_a_cjk_font(pdf):
    text = text_of(pdf)
    for term in ("不稳定神经网络中的反向传播算法", "李雅普诺夫谱", "协变李雅普诺夫向量", "梯度爆炸"):
        assert term in text, term
    fonts = subprocess.run(["pdffonts", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"NotoS(erif|ans)CJK", fonts), fonts


def log_of(pdf: Path) -> str:
    return pdf.with_suffix(".log").read_text(encoding="utf-8", errors="replace")


def test_a4_pages_and_nothing_sticks_out(pdf):
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"Page size:\s+595\.2\d x 841\.8\d pts", info), info
    log = log_of(pdf)
    wide = [float(w) for w in re.findall(r"Overfull \\hbox \((\d+(?:\.\d+)?)pt too wide\)", log)]
    assert all(w <= 5 for w in wide), f"overfull boxes wider than 5 pt: {sorted(w for w in wide if w > 5)}"


def test_text_and_maths_fonts_match(pdf):
    """TeX Gyre Termes with TeX Gyre Termes Math, code in DejaVu Sans Mono: no Computer Modern
    (the maths of a DejaVu Serif text, before), and no glyph missing from them."""
    fonts = subprocess.run(["pdffonts", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert "TeXGyreTermes-Regular" in fonts and "TeXGyreTermesMath" in fonts, fonts
    assert not re.search(r"\+(CM[A-Z]+\d|DejaVuSerif|MSAM|MSBM)", fonts), fonts
    assert "Missing character" not in log_of(pdf)


def test_latin_punctuation_is_not_set_full_width(pdf):
    """xeCJK set ’ “ ” from the Chinese font, full width: "draft’ s" in the text layout."""
    layout = subprocess.run(["pdftotext", "-layout", "-enc", "UTF-8", str(pdf), "-"],
                            capture_output=True, text=True, check=True).stdout
    split = re.findall(r"\w*[A-Za-z]’ (?:s|t|d|ll|re|ve|m)\b", layout)
    assert not split, split[:10]
    assert "draft’s" in layout and "不稳定神经网络" in layout


def test_contents_parts_preface_and_references(pdf):
    text = text_of(pdf)
    assert re.search(r"^\f?CONTENTS$", text, re.M | re.I), "the table of contents is not headed Contents"
    assert not re.search(r"PART I\s*—", text), "the contents are headed by the first part's caption"
    toc = pdf.with_suffix(".toc").read_text(encoding="utf-8")
    parts = re.findall(r"\\contentsline \{part\}\{(.*?)\}\{", toc)
    assert [re.sub(r"\\hspace \{1em\}", " ", p) for p in parts] == [
        "I Unstable networks", "II Differentiating unstable networks", "III Experiments", "Appendices"], parts
    chapters = re.findall(r"\\contentsline \{chapter\}\{(?:\\numberline \{(\w+)\})?(.*?)\}\{", toc)
    assert [n for n, _ in chapters] == ["", *"1234567", *"ABC", ""], chapters
    assert chapters[0][1] == "Preface" and chapters[-1][1] == "References", chapters
    # the Preface's sections are sections, not chapters of their own
    assert re.search(r"\\contentsline \{section\}\{The thesis in one page\}", toc), toc[:2000]
    # the bibliography right under its one heading, on the same page
    pages = text.split("\f")
    first = next(i for i, page in enumerate(pages) if re.search(r"^REFERENCES$", page, re.M))
    assert "[Baladi 2007]" in pages[first], pages[first][:500]


def test_appendices_are_lettered_in_their_labels(pdf):
    text = text_of(pdf)
    assert "Fig. B.1: Two layers, each with spectral radius 0.5" in text
    assert "(B.1)" in text and "(C.1)" not in text
    # chapter 2's numbers are chapter 2's alone
    assert len(re.findall(r"^Fig\. 2\.1:", text, re.M)) == 1
    assert "𝜆1 = +0.7505" in text or "λ1 = +0.7505" in text, "the caption's maths is not typeset"


def dataframe_outputs() -> list[tuple[str, str]]:
    """(notebook, first body line of the text repr) of every DataFrame output with an HTML table."""
    found = []
    for notebook in sorted((ROOT / "book").glob("*.ipynb")):
        for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
            for output in cell.get("outputs", []):
                data = output.get("data", {})
                if 'class="dataframe' in "".join(data.get("text/html", "")):
                    lines = "".join(data["text/plain"]).splitlines()
                    found.append((notebook.stem, lines[-1]))
    return found


def test_dataframes_are_typeset_tables(pdf):
    tex = pdf.with_suffix(".tex").read_text(encoding="utf-8")
    frames = dataframe_outputs()
    assert len(frames) > 80, len(frames)
    assert tex.count(r"\chaosgradtable{") == len(frames), (tex.count(r"\chaosgradtable{"), len(frames))
    verbatim = "\n".join(re.findall(r"\\begin\{sphinxVerbatim\}.*?\\end\{sphinxVerbatim\}", tex, re.S))
    printed = [(nb, line) for nb, line in frames if line.strip() and line in verbatim]
    assert not printed, printed[:5]
    log = log_of(pdf)
    shrunk = re.findall(r"chaosgrad table on page (\d+): scriptsize shrunk to (\d+) percent", log)
    assert not shrunk, f"tables shrunk below \\scriptsize: {shrunk}"
    text = text_of(pdf)
    assert "0.4192 ± 0.0027" in text and "↪0" not in text


def test_proofs_have_no_empty_title_bar(pdf):
    tex = pdf.with_suffix(".tex").read_text(encoding="utf-8")
    untitled = re.findall(r"\\begin\{sphinxadmonition\}\{note\}(?!\{)", tex)
    assert not untitled, f"{len(untitled)} admonitions without a title"
    assert tex.count(r"\begin{chaosgradproof}") >= 9
    assert re.search(r"^Proof\. By the chain rule", text_of(pdf), re.M)


def test_figures_share_one_scale(pdf):
    """Every figure at the book's one scale of its drawn size (its labels one size
    throughout), but those wider than the text at that scale: shrunk to the text width where
    that keeps 0.6 of their size, turned a quarter with their caption otherwise (before, the
    widest figures were shrunk to 0.44-0.52, their 12 pt labels to about 5.5 pt). The warning
    lists the exceptions and how far."""
    log = log_of(pdf)
    found = re.findall(r"chaosgrad figure \{([\w-]+)\}\.\w+: scale\s+(\d+) per mille(?: \(not \d+\))?(, turned)?", log)
    scales = {k: int(v) for k, v, _ in found}
    turned = sorted(k for k, _, t in found if t)
    assert len(scales) == len(named_figures()), (len(scales), len(named_figures()))
    common = max(scales.values())
    shrunk = {k: v for k, v in scales.items() if v < common and k not in turned}
    assert len(shrunk) + len(turned) < len(scales) / 2, (shrunk, turned)
    assert all(v >= 600 for v in scales.values()), shrunk  # no label under 0.6 x 12 pt = 7.2 pt
    assert 1 <= len(turned) <= 12, turned
    warnings.warn(f"{sum(v == common for v in scales.values())} of {len(scales)} figures at {common / 1000:g} of their "
                  f"drawn size; turned: " + ", ".join(f"{k} {scales[k] / 1000:g}" for k in turned)
                  + "; shrunk to the text width: " + ", ".join(f"{k} {v / 1000:g}" for k, v in sorted(shrunk.items())))
