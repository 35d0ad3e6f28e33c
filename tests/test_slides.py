"""`make slides`: every number on the deck is found in a stored output, every figure exists,
and (where TeX Live is installed) the deck compiles offline to one page per slide."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import build_slides  # noqa: E402

TEX = ("xelatex", "latexmk", "pdfinfo", "pdftotext", "pdffonts")


def test_every_number_is_read_from_a_stored_output():
    values = build_slides.read_numbers()
    assert set(values) == set(build_slides.NUMBERS)
    estimates = [v for v in values.values() if "±" in v]
    assert len(estimates) >= 10, values
    # the number is the one the notebook prints: e.g. chapter 1's measured critical line
    text = build_slides.stored_text(ROOT / "book" / "ch01_lyapunov_spectrum.ipynb", "b79a527f")
    assert values["critical"] in text and values["critical_width"] in text


def test_every_slide_names_a_figure_the_book_draws_and_uses_every_number():
    names = {}
    for notebook in (ROOT / "book").glob("*.ipynb"):
        for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
            figure = cell.get("metadata", {}).get("mystnb", {}).get("figure", {})
            if "name" in figure:
                names[figure["name"]] = notebook.stem
    for slide in build_slides.SLIDES:
        if slide.figure:
            assert names.get(slide.figure) == slide.notebook, (slide.title, slide.figure)
            assert build_slides.stored_png(ROOT / "book" / f"{slide.notebook}.ipynb", slide.figure)[:8] == b"\x89PNG\r\n\x1a\n"
    used = set().union(*(build_slides.PLACEHOLDER.findall(s.text) for s in build_slides.SLIDES))
    assert used <= set(build_slides.NUMBERS) and set(build_slides.NUMBERS) <= used


def test_a_missing_number_names_its_cell(monkeypatch):
    monkeypatch.setitem(build_slides.NUMBERS, "nowhere",
                        build_slides.Number("ch01_lyapunov_spectrum", "b79a527f", r"no such text (\d)"))
    with pytest.raises(LookupError, match="cell b79a527f of ch01_lyapunov_spectrum.ipynb"):
        build_slides.read_numbers()


@pytest.mark.skipif(any(shutil.which(t) is None for t in TEX),
                    reason="the deck needs " + ", ".join(t for t in TEX if shutil.which(t) is None)
                    + " (see README, 'The book on paper')")
def test_draft_deck_compiles_offline_one_page_per_slide(tmp_path):
    assert build_slides.main(["--draft", "--out", str(tmp_path)]) == 0
    pdf = tmp_path / "defence-slides.pdf"
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert int(re.search(r"Pages:\s+(\d+)", info).group(1)) == len(build_slides.SLIDES) + 1  # + title
    for slide in build_slides.SLIDES:
        if slide.figure:
            assert (tmp_path / f"{build_slides.figure_stem(slide)}.png").exists()
    text = subprocess.run(["pdftotext", "-enc", "UTF-8", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    for term in ("不稳定神经网络中的反向传播算法", "梯度爆炸", "李雅普诺夫谱"):  # glossary terms
        assert term in text, term
    assert "??" not in text
    assert build_slides.read_numbers()["truth_160"].split(" ")[0] in text
    log = (tmp_path / "defence-slides.log").read_text(encoding="utf-8", errors="replace")
    assert "Missing character" not in log
    # offline: nothing in the deck points outside it
    assert not re.search(rb"/URI\s*\(https?:", pdf.read_bytes())


def test_figures_older_than_their_notebook_are_exported_again(tmp_path):
    import os

    from export_figures import needs_export

    notebook, figure = tmp_path / "ch09.ipynb", tmp_path / "ch09-x.pdf"
    notebook.write_text("{}")
    assert needs_export(notebook, [figure])  # missing
    figure.write_bytes(b"%PDF")
    os.utime(notebook, (1_000_000, 1_000_000))
    os.utime(figure, (2_000_000, 2_000_000))
    assert not needs_export(notebook, [figure])
    os.utime(notebook, (3_000_000, 3_000_000))  # the notebook was re-executed since
    assert needs_export(notebook, [figure])
