"""`make slides`: every number on both decks is found in a stored output, the English and the
Chinese deck carry the same numbers, every chart is readable when projected, and (where TeX
Live is installed) both decks compile offline to one page per slide without an overfull box."""

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
import slide_charts  # noqa: E402
from defence_deck import SLIDES, Slide  # noqa: E402

TEX = ("xelatex", "latexmk", "pdfinfo", "pdftotext", "pdffonts")


def test_every_number_is_read_from_a_stored_output():
    values = build_slides.read_numbers()
    assert set(values) == set(build_slides.NUMBERS)
    estimates = [v for v in values.values() if "±" in v]
    assert len(estimates) >= 30, values
    # the number is the one the notebook prints: e.g. chapter 1's measured critical line
    text = slide_charts.stored_text("ch01_lyapunov_spectrum", "b79a527f")
    assert values["critical"] in text and values["critical_width"] in text
    assert values["critical"] == "1.789 ± 0.007"  # fails if the pattern catches another column


def test_every_number_is_used_and_every_placeholder_is_a_number():
    used = set()
    for slide in SLIDES:
        for part in (slide.title, slide.subtitle, slide.body, slide.notes):
            assert set(part) == {"en", "zh"}, part
            for lang in ("en", "zh"):
                used |= set(build_slides.PLACEHOLDER.findall(part[lang]))
    assert used == set(build_slides.NUMBERS), (used ^ set(build_slides.NUMBERS))


def test_both_decks_carry_the_same_numbers_slide_by_slide():
    values = build_slides.read_numbers()
    for slide in SLIDES:
        en = build_slides.slide_numbers(slide, "en", values)
        zh = build_slides.slide_numbers(slide, "zh", values)
        assert en == zh, (slide.title["en"], sorted(set(en) ^ set(zh)))
    # the check can fail: one digit translated differently
    wrong = Slide({"en": "t", "zh": "t"}, {"en": "width 500: {critical}", "zh": "宽度 50：{critical}"},
                  {"en": "", "zh": ""})
    assert build_slides.slide_numbers(wrong, "en", values) != build_slides.slide_numbers(wrong, "zh", values)


def test_decks_have_at_least_20_slides_and_backup_slides():
    values = build_slides.read_numbers()
    for lang in ("en", "zh"):
        source = build_slides.deck_source(values, lang, date="1 June 2024")
        main, backup = source.split("\\appendix")
        assert main.count("\\begin{frame}") >= 20  # title included
        assert backup.count("\\begin{frame}") >= 3
        assert not [n for n in build_slides.NUMBERS if "{" + n + "}" in source]  # all substituted
    zh = build_slides.deck_source(values, "zh")
    for term in ("李雅普诺夫谱", "梯度爆炸", "伴随阴影", "核微分", "线性响应", "长时间平均"):  # glossary terms
        assert term in zh, term
    with pytest.raises(ValueError, match="lang must be one of"):
        build_slides.deck_source(values, "fr")


def test_a_missing_number_names_its_cell(monkeypatch):
    monkeypatch.setitem(build_slides.NUMBERS, "nowhere",
                        build_slides.Number("ch01_lyapunov_spectrum", "b79a527f", r"no such text (\d)"))
    with pytest.raises(LookupError, match="cell b79a527f of ch01_lyapunov_spectrum.ipynb"):
        build_slides.read_numbers()
    with pytest.raises(KeyError, match="not a number of NUMBERS"):
        build_slides.substitute("at {nowhere_else}", {})


def test_numbers_are_set_in_the_text_font():
    assert build_slides.latex_number("-0.1 ± 0.02") == r"\text{−0.1 ± 0.02}"
    assert build_slides.latex_number("9.819e+06") == r"\text{9.819\,×\,10\textsuperscript{6}}"
    assert build_slides.latex_number("1e-05") == r"\text{1\,×\,10\textsuperscript{−5}}"
    assert build_slides.latex_number("70-190") == r"\text{70–190}"  # a range, not a subtraction


@pytest.mark.parametrize("name", sorted(slide_charts.CHARTS))
def test_every_chart_is_readable_projected(name):
    fig = slide_charts.draw(name)  # raises on a legend over data, an unlabelled axis or small text
    try:
        assert (fig.get_figwidth(), fig.get_figheight()) == slide_charts.CHART_SIZE
        # placed at its own width (scale 1), 10 pt or more on the page is 21 pt projected
        smallest = slide_charts.smallest_projected_points(fig, slide_charts.CHART_SIZE[0])
        assert smallest >= slide_charts.MIN_PROJECTED_POINTS, smallest
        assert smallest / slide_charts.PROJECTION_SCALE >= 10 - 1e-9
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    source = build_slides.deck_source(build_slides.read_numbers())
    assert f"width={slide_charts.CHART_SIZE[0]}in]{{chart-{name}}}" in source


def test_small_text_is_refused():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=slide_charts.CHART_SIZE)
    ax.plot([0, 1], [0, 1])
    ax.set_xlabel("x", fontsize=6)
    ax.set_ylabel("y", fontsize=12)
    problems = slide_charts.font_problems(fig, slide_charts.CHART_SIZE[0])
    assert len(problems) >= 1 and "'x' is 12.7 pt projected" in problems[0], problems
    # the same figure shrunk to half width on the page: its 12 pt label is 12.7 pt projected
    assert any("'y'" in p for p in slide_charts.font_problems(fig, slide_charts.CHART_SIZE[0] / 2))
    plt.close(fig)


def test_tables_are_read_by_row_label():
    rows = slide_charts.table_rows("ch03_backprop_failure", "735168e1", levels=2)
    assert rows["sliding-window truncation / K = 3"][-1] == build_slides.read_numbers()["bias_k3"]
    assert slide_charts.estimate("0.80 ± 0.19") == (0.80, 0.19)
    with pytest.raises(LookupError, match="prints no row 'nothing'"):
        slide_charts.row("ch03_backprop_failure", "735168e1", "nothing", levels=2)
    with pytest.raises(ValueError, match="not a printed estimate"):
        slide_charts.estimate("12 of 12")


@pytest.mark.skipif(any(shutil.which(t) is None for t in TEX),
                    reason="the deck needs " + ", ".join(t for t in TEX if shutil.which(t) is None)
                    + " (see README, 'The book on paper')")
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_deck_compiles_offline_one_page_per_slide(tmp_path, lang):
    assert build_slides.main(["--lang", lang, "--out", str(tmp_path), "--date", "1 June 2024"]) == 0
    stem = build_slides.output_name(lang)
    pdf = tmp_path / f"{stem}.pdf"
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    pages = int(re.search(r"Pages:\s+(\d+)", info).group(1))
    assert pages == len(SLIDES) + 1  # + title
    notes = json.loads((tmp_path / f"{stem}.pdfpc").read_text(encoding="utf-8"))
    assert notes["pdfpcFormat"] == 2 and len(notes["pages"]) == pages
    assert all(p["note"].strip() for p in notes["pages"])
    text = subprocess.run(["pdftotext", "-enc", "UTF-8", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "不稳定神经网络中的反向传播算法" in text and "??" not in text
    values = build_slides.read_numbers()
    for name in ("truth_160", "full_lorenz", "kernel_80", "ch7_kernel"):
        assert values[name].split(" ")[0] in text, name
    log = (tmp_path / f"{stem}.log").read_text(encoding="utf-8", errors="replace")
    assert "Missing character" not in log
    assert not re.findall(r"Overfull \\[hv]box", log), re.findall(r"Overfull .*", log)
    assert not re.search(rb"/URI\s*\(https?:", pdf.read_bytes())  # offline: nothing points outside
    # the maths' digits and letters are the text's sans serif: no serif roman face is embedded
    fonts = subprocess.run(["pdffonts", str(pdf)], capture_output=True, text=True, check=True).stdout
    faces = {line.split()[0].split("+")[-1] for line in fonts.splitlines()[2:]}
    assert "DejaVuSans" in faces
    assert not [f for f in faces if f.startswith(("CMR", "DejaVuSerif", "LMRoman"))], faces
