"""The book builds strictly (-W: a broken cross-reference or missing citation fails) from the
stored outputs, without executing anything, and the rendered pages carry what they promise."""

from __future__ import annotations

import html as html_text
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from book_config import build_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("book")
    config = build_config(out)
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jupyter_book), "build", str(ROOT), "--config", str(config), "--path-output", str(out), "-W", "--keep-going"]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, f"strict book build failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    return out / "_build" / "html"


def page(html: Path, name: str) -> str:
    return (html / "book" / f"{name}.html").read_text(encoding="utf-8")


def test_every_toc_page_is_rendered(html):
    for name in ["intro", "ch01_lyapunov_spectrum", "ch06_training_dynamics", "ch07_learning_chaos", "appendix_notation",
                 "appendix_corrections", "appendix_defence", "references"]:
        assert (html / "book" / f"{name}.html").exists(), name
    assert (html / "index.html").exists()


def test_preface_has_mathematics_definitions_and_citations(html):
    intro = page(html, "intro")
    assert "mathjax" in intro.lower()
    assert re.search(r'class="[^"]*math notranslate[^"]*"', intro), "no typeset math"
    assert re.search(r'class="[^"]*proof definition[^"]*"', intro), "no sphinx-proof definition block"
    assert re.search(r'<a class="reference internal" href="references\.html#id\d+"[^>]*>Oseledets', intro) or \
        'references.html#id' in intro, "no resolved citation"
    assert re.search(r'id="equation-eq-preface-map"', intro), "no labelled, numbered equation"


def test_chapters_are_numbered_across_parts(html):
    index = (html / "book" / "ch06_training_dynamics.html").read_text(encoding="utf-8")
    assert re.search(r"<h1>\s*<span class=\"section-number\">6\. </span>", index), "chapter 6 is not numbered 6"
    last = (html / "book" / "ch07_learning_chaos.html").read_text(encoding="utf-8")
    assert re.search(r"<h1>\s*<span class=\"section-number\">7\. </span>", last), "chapter 7 is not numbered 7"


def test_corrections_render_stored_outputs_and_figure(html):
    text = page(html, "appendix_corrections")
    assert "0.7505" in text and "0.0228" in text, "stored outputs are missing from the rendered page"
    assert re.search(r'<img[^>]+src="[^"]+\.png"', text), "the figure is missing"
    assert re.search(r'class="[^"]*proof proposition[^"]*"', text)


EXTERNAL = re.compile(r"""<(script|link|img|source|iframe)\b[^>]*\b(src|href)\s*=\s*["']((?:https?:)?//[^"']+)["']""", re.I)
CSS_EXTERNAL = re.compile(r"""(@import\s+(?:url\()?|url\()\s*["']?((?:https?:)?//[^"')\s]+)""", re.I)


def test_no_page_loads_anything_from_the_network(html):
    """Offline on a defence laptop: no script, stylesheet, font or image from another host.
    (Links a reader clicks, <a href>, are allowed.)"""
    found = []
    for path in html.rglob("*.html"):
        found += [f"{path.relative_to(html)}: <{tag}> {url}" for tag, _, url in EXTERNAL.findall(path.read_text(encoding="utf-8"))]
    for sheet in html.rglob("*.css"):
        found += [f"{sheet.relative_to(html)}: {url}" for _, url in CSS_EXTERNAL.findall(sheet.read_text(encoding="utf-8", errors="replace"))]
    assert not found, "external resources:\n" + "\n".join(sorted(set(found))[:20])


def test_mathjax_is_served_from_the_book_with_the_macros(html):
    intro = page(html, "intro")
    assert re.search(r'<script[^>]+src="[./]*_static/mathjax/tex-chtml\.js', intro), "MathJax is not loaded from _static"
    assert (html / "_static" / "mathjax" / "tex-chtml.js").exists()
    assert (html / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir(), "MathJax fonts are missing"
    assert r'"R": "\\mathbb{R}"' in intro or r"\\mathbb{R}" in intro, "the \\R macro is not configured"


def test_references_page_lists_the_cited_works(html):
    refs = page(html, "references")
    for author in ["Oseledets", "Benettin", "Ni", "Poole", "Cohen"]:
        assert author in refs, author


def test_references_are_labelled_author_year_with_arxiv_links(html):
    """The list is labelled as the text cites (author-year, not [1] or [Ose68]), holds every
    cited work, and every cited entry with an arXiv eprint links to its abstract page."""
    refs = page(html, "references")
    labels = re.findall(r'<span class="label"><span class="fn-bracket">\[</span>(.*?)<span', refs)
    bib = (ROOT / "references.bib").read_text(encoding="utf-8")
    entries = dict(re.findall(r"@\w+\{([^,]+),(.*?)\n\}", bib, flags=re.S))
    sources = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "book").iterdir() if p.suffix in {".md", ".ipynb"})
    cited = {key.strip() for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", sources) for key in group.split(",")}
    assert cited <= set(entries), f"cited but not in references.bib: {sorted(cited - set(entries))}"
    assert len(labels) == len(cited), f"{len(labels)} entries listed for {len(cited)} cited works"
    bad = [label for label in labels if not re.fullmatch(r"[^\d\[\]]+ (\d{4}[a-z]?|n\.d\.)", label)]
    assert not bad, f"labels not of the form 'Author 2019', 'A and B 2019', 'A et al. 2019': {bad}"
    assert "Ni and Talnikar 2019" in labels and "Oseledets 1968" in labels, labels
    for key in sorted(cited):
        if eprint := re.search(r"eprint\s*=\s*\{([^}]+)\}", entries[key]):
            assert f'href="https://arxiv.org/abs/{eprint[1]}"' in refs, f"{key}: no link to arXiv {eprint[1]}"
    # the text cites by the list's labels: two works of one author and year are told apart
    cites = {text for path in (html / "book").glob("ch*.html")
             for text in re.findall(r'href="references\.html#[^"]+"[^>]*>([^<]+)</a>', path.read_text(encoding="utf-8"))}
    assert cites and cites <= set(labels), f"citations not labelled as in the list: {sorted(cites - set(labels))[:10]}"
    assert "Ni 2025a" in labels and "Ni 2025b" in labels, labels


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    return None


RAW_TEX = re.compile(r"\\\(|\\\[|\\begin\{")


@pytest.mark.skipif(chromium() is None, reason="no Chromium on PATH: install Debian's 'chromium' package "
                    "(apt-get install chromium) to check that MathJax renders every formula offline")
def test_mathjax_renders_every_formula_in_a_headless_browser(html, tmp_path):
    """Open every page in headless Chromium with the network disabled, let MathJax typeset,
    and read the resulting DOM: no raw TeX delimiters may remain in the visible text, and
    MathJax may report no errors (mjx-merror elements)."""
    problems, typeset = [], 0
    for path in sorted(html.rglob("*.html")):
        if "_static" in path.parts or path.name in ("genindex.html", "search.html"):
            continue
        cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--proxy-server=127.0.0.1:9",
               f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000", "--dump-dom", path.as_uri()]
        dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
        assert "</html>" in dom, f"Chromium returned no page for {path.name}"
        visible = re.sub(r"<(script|style|mjx-assistive-mml)\b.*?</\1>", "", dom, flags=re.S)
        visible = re.sub(r"<[^>]+>", " ", visible)
        if RAW_TEX.search(visible):
            problems.append(f"{path.relative_to(html)}: raw TeX left: {RAW_TEX.search(visible).group(0)!r} near "
                            f"{visible[max(0, RAW_TEX.search(visible).start() - 60):RAW_TEX.search(visible).start() + 60]!r}")
        if "<mjx-merror" in dom or "data-mjx-error=" in dom:
            problems.append(f"{path.relative_to(html)}: MathJax reported an error")
        typeset += dom.count("<mjx-container")
    assert not problems, "\n".join(problems)
    assert typeset > 100, f"only {typeset} formulas were typeset in the whole book"


def visible_text(page_html: str) -> str:
    """The text a reader sees on a page, outside code: without scripts, styles, code blocks
    (source and printed output) and tags, entities decoded."""
    text = re.sub(r"<(script|style|pre|code)\b.*?</\1>", " ", page_html, flags=re.S)
    return html_text.unescape(re.sub(r"<[^>]+>", " ", text))


def test_no_raw_dollar_signs_in_the_rendered_text(html):
    """A formula that the Markdown parser did not take as mathematics (in a figure caption set
    in cell metadata, in a table's row label) reaches the reader as '$v_1$'. Mathematics is
    rendered from \\( \\) delimiters, so no '$' may remain in any page's text outside code."""
    found = []
    for path in sorted((html / "book").glob("*.html")):
        text = visible_text(path.read_text(encoding="utf-8"))
        found += [f"{path.name}: {' '.join(text[max(0, m.start() - 60):m.start() + 40].split())!r}"
                  for m in re.finditer(r"\$", text)]
    assert not found, "raw dollar signs (unrendered TeX) in the text:\n" + "\n".join(found[:20])


def test_table_headers_are_set_with_symbols(html):
    """Headers and row labels of DataFrames in ASCII (sigma_w2, lambda_1, chi1) are shown with
    symbols (_ext/tablelabels.py); values are untouched."""
    sys.path.insert(0, str(ROOT / "_ext"))
    from tablelabels import readable

    assert readable("critical sigma_w2") == "critical σ<sub>w</sub><sup>2</sup>"
    assert readable("(1/2) ln chi1") == "(1/2) ln χ<sub>1</sub>"
    assert readable("tanh N = 128: u = 18, lambda_u / lambda_u+1") == \
        "tanh N = 128: u = 18, λ<sub>u</sub> / λ<sub>u+1</sub>"
    assert readable("|dtheta_T/dalpha|") == "|dθ<sub>T</sub>/dα|"
    assert readable("N * Delta") == "NΔ" and readable("param_jvps") == "param_jvps"
    ch02 = page(html, "ch02_adjoint_duality")
    headers = re.findall(r"<th\b[^>]*>(.*?)</th>", ch02, flags=re.S)
    assert "σ<sub>w</sub><sup>2</sup>" in headers and "forward λ<sub>1</sub>" in headers
    assert not [h for h in headers if re.search(r"sigma|lambda|chi1", h)], headers
    assert "<td>0.1402 ± 0.0024</td>" in ch02  # values as printed


def test_punctuation_after_an_inline_formula_stays_on_its_line(html):
    """A browser may break between an inline formula and the "." or ")" after it, leaving the
    punctuation alone at the start of a line; _ext/mathpunct.py glues the two into one
    no-wrap span. Every formula followed directly by punctuation must sit in such a span."""
    math = r'<span class="math notranslate nohighlight">\\\((?:(?!</span>).)*?\\\)</span>'
    loose, glued = 0, 0
    for path in sorted((html / "book").glob("*.html")):
        text = path.read_text(encoding="utf-8")
        loose += len(re.findall(math + r"[.,;:)]", text, flags=re.S))
        glued += len(re.findall(r'<span class="math-nowrap">' + math + r"[.,;:)]+</span>", text, flags=re.S))
    assert loose > 100  # the book has many: the pattern finds them
    assert glued == loose, f"{loose - glued} of {loose} formulas can leave their punctuation on the next line"


#: Injected into a copy of a page: once it has loaded, the rendered size of every figure and
#: whether any table cell holding an estimate runs over more than one line, as JSON in the DOM.
MEASURE = """<script>
window.addEventListener("load", () => setTimeout(() => {
  const figures = [...document.querySelectorAll("img")].filter(i => i.naturalWidth > 0 && i.offsetWidth > 0)
    .map(i => { const r = i.getBoundingClientRect();
                return [i.getAttribute("src"), i.naturalWidth / i.naturalHeight, r.width / r.height]; });
  const broken = [...document.querySelectorAll("table td, table th")].filter(c => c.textContent.includes("\u00b1"))
    .filter(c => { const range = document.createRange(); range.selectNodeContents(c);
                   const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
                   return tops.size > 1; })
    .map(c => c.textContent.trim());
  const out = document.createElement("pre"); out.id = "measured";
  out.textContent = JSON.stringify({figures, broken}); document.body.appendChild(out);
}, 500));
</script>"""


@pytest.mark.skipif(chromium() is None, reason="no Chromium on PATH: install Debian's 'chromium' package "
                    "(apt-get install chromium) to measure the rendered figures and tables")
@pytest.mark.parametrize("width", [1400, 1024])
def test_figures_keep_their_aspect_ratio_and_estimates_stay_on_one_line(html, tmp_path, width):
    """At window widths of 1400 and 1024 px, every figure is shown with the aspect ratio of its
    PNG (within 2%: the stored width and height attributes must not squash it when the page is
    narrower than the figure), and no table cell breaks an estimate "value \u00b1 error" over lines."""
    problems, measured, stored = [], 0, 0
    for path in sorted((html / "book").glob("*.html")):
        source = path.read_text(encoding="utf-8")
        stored += len(re.findall(r"<img[^>]+\.png", source))
        if "<img" not in source and "\u00b1" not in source:
            continue
        probe = path.with_name(f"_measure_{path.name}")
        probe.write_text(source.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
        cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--proxy-server=127.0.0.1:9",
               f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={width},900", "--virtual-time-budget=20000",
               "--dump-dom", probe.as_uri()]
        dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
        probe.unlink()
        found = re.search(r'<pre id="measured">(.*?)</pre>', dom, flags=re.S)
        assert found, f"the measuring script did not run on {path.name}"
        result = json.loads(html_text.unescape(found[1]))
        measured += len(result["figures"])
        problems += [f"{path.name}: {src} shown at {shown:.2f}:1, stored {stored:.2f}:1"
                     for src, stored, shown in result["figures"] if abs(shown / stored - 1) > 0.02]
        problems += [f"{path.name}: estimate broken over lines: {text!r}" for text in result["broken"]]
    assert not problems, f"at {width} px:\n" + "\n".join(problems[:20])
    assert measured == stored > 30, f"{measured} of the {stored} figures were measured"
