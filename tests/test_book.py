"""The book builds strictly (-W: a broken cross-reference or missing citation fails) from the
stored outputs, without executing anything, and the rendered pages carry what they promise."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("book")
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    config["execute"]["execute_notebooks"] = "off"
    (out / "_config.yml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jupyter_book), "build", str(ROOT), "--config", str(out / "_config.yml"), "--path-output", str(out), "-W", "--keep-going"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, f"strict book build failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    return out / "_build" / "html"


def page(html: Path, name: str) -> str:
    return (html / "book" / f"{name}.html").read_text(encoding="utf-8")


def test_every_toc_page_is_rendered(html):
    for name in ["intro", "ch01_lyapunov_spectrum", "ch06_training_dynamics", "appendix_notation",
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


def test_corrections_render_stored_outputs_and_figure(html):
    text = page(html, "appendix_corrections")
    assert "0.7505" in text and "0.0228" in text, "stored outputs are missing from the rendered page"
    assert re.search(r'<img[^>]+src="[^"]+\.png"', text), "the figure is missing"
    assert re.search(r'class="[^"]*proof proposition[^"]*"', text)


def test_references_page_lists_the_cited_works(html):
    refs = page(html, "references")
    for author in ["Oseledets", "Benettin", "Ni", "Poole", "Cohen"]:
        assert author in refs, author
