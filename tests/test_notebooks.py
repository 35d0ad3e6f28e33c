"""Guards on the committed notebooks, complementary to nbval (which re-executes them).

nbval proves that re-execution reproduces every stored output; these tests prove that
there *are* stored outputs to compare (every code cell executed, top to bottom, no errors)
and that the book's structure and figure rules hold.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))
CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]")


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def test_there_are_notebooks_to_check():
    assert NOTEBOOKS, "book/ holds no notebooks: nbval would have nothing to compare"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_code_cell_was_executed_in_order_without_errors(path):
    cells = code_cells(load(path))
    assert cells, f"{path.name} has no code cells"
    counts = [c["execution_count"] for c in cells]
    unexecuted = [i for i, n in enumerate(counts) if n is None]
    assert not unexecuted, f"{path.name}: code cells {unexecuted} were never executed (run `make rerun NB={path.relative_to(ROOT)}`)"
    assert counts == list(range(1, len(cells) + 1)), f"{path.name}: execution counts {counts} are not 1..n (rerun top to bottom)"
    errors = [i for i, c in enumerate(cells) if any(o["output_type"] == "error" for o in c["outputs"])]
    assert not errors, f"{path.name}: code cells {errors} stored an error"
    silent = [i for i, c in enumerate(cells) if not c["outputs"]]
    assert not silent, (
        f"{path.name}: code cells {silent} store no output; with execute_notebooks 'auto' the book "
        "build would re-execute the notebook instead of rendering the outputs nbval verified "
        "(end such a cell with a print that reports what it set up)"
    )
    stderr = [i for i, c in enumerate(cells) if any(o.get("name") == "stderr" for o in c["outputs"])]
    assert not stderr, f"{path.name}: code cells {stderr} stored stderr output (warnings or progress bars)"


#: A code cell holds a few calls and a plot: about 15 lines, at most 20 once lines are
#: wrapped at 88 characters (what the book's code blocks show without scrolling).
MAX_CELL_LINES, MAX_LINE_LENGTH = 20, 88


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_ignored_outputs_are_rare_and_cells_short(path):
    cells = code_cells(load(path))
    ignored = [i for i, c in enumerate(cells) if "NBVAL_IGNORE_OUTPUT" in "".join(c["source"])]
    assert len(ignored) <= max(1, len(cells) // 10), f"{path.name}: cells {ignored} skip nbval; keep that for timings"
    long = [i for i, c in enumerate(cells) if len("".join(c["source"]).splitlines()) > MAX_CELL_LINES]
    assert not long, f"{path.name}: code cells {long} exceed {MAX_CELL_LINES} lines; move the algorithm into lib/chaosgrad"
    wide = [(i, n + 1) for i, c in enumerate(cells) for n, line in enumerate("".join(c["source"]).splitlines())
            if len(line) > MAX_LINE_LENGTH]
    assert not wide, f"{path.name}: (code cell, line) {wide} longer than {MAX_LINE_LENGTH} characters; wrap them"


def png_width(data: str) -> int:
    """Pixel width of a base64-encoded PNG, from its IHDR chunk."""
    return int.from_bytes(base64.b64decode(data[:64])[16:20], "big")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_figures_are_stored_at_200_dpi(path):
    """Figures are "retina" PNGs (chaosgrad.plotting.use_book_style): twice as many pixels
    as the display width stored beside them, i.e. 200 dpi for a figure shown at 100 dpi."""
    for i, cell in enumerate(code_cells(load(path))):
        for out in cell["outputs"]:
            if "image/png" not in out.get("data", {}):
                continue
            shown = out.get("metadata", {}).get("image/png", {}).get("width")
            assert shown, f"{path.name}: code cell {i} stores a PNG without its display width (not retina)"
            pixels = png_width(out["data"]["image/png"])
            assert pixels >= 2 * shown - 2, f"{path.name}: code cell {i}: {pixels} px shown at {shown} px, below 200 dpi"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_cjk_text_in_code(path):
    """Figures may not contain CJK glyphs (fonts are not guaranteed); code is where they would come from."""
    for i, c in enumerate(code_cells(load(path))):
        assert not CJK.search("".join(c["source"])), f"{path.name}: code cell {i} contains CJK characters"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_kernel_is_python3(path):
    assert load(path)["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_figure_is_numbered_captioned_and_cited(path):
    """A figure is a code cell with an image output; MyST-NB numbers it when the cell has
    ``mystnb: figure: {caption, name}`` metadata, and the prose must cite it by {numref}."""
    nb = load(path)
    prose = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    names = []
    for i, cell in enumerate(code_cells(nb)):
        if not any("image/png" in o.get("data", {}) for o in cell["outputs"]):
            continue
        figure = cell["metadata"].get("mystnb", {}).get("figure", {})
        assert figure.get("name", "").startswith("fig-") and len(figure.get("caption", "")) > 30, (
            f"{path.name}: code cell {i} draws a figure without mystnb figure metadata (name 'fig-...', a caption)")
        assert f"{{numref}}`{figure['name']}`" in prose, f"{path.name}: figure {figure['name']} is never cited with {{numref}}"
        names.append(figure["name"])
    assert len(names) == len(set(names)), f"{path.name}: figure names repeat: {names}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_output_is_split_into_several_streams(path):
    """A table printed in pieces (one stream output per flush) renders as several boxes."""
    for i, cell in enumerate(code_cells(load(path))):
        names = [o["name"] for o in cell["outputs"] if o["output_type"] == "stream"]
        assert len(names) == len(set(names)), f"{path.name}: code cell {i} stores {names}: one stream of each kind only"


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]
    for part in toc["parts"]:
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


def test_table_of_contents_and_book_folder_agree():
    listed = set(toc_files())
    present = {str(p.relative_to(ROOT).with_suffix("")) for p in BOOK.iterdir() if p.suffix in {".md", ".ipynb"}}
    assert listed == present, f"in _toc.yml only: {sorted(listed - present)}; in book/ only: {sorted(present - listed)}"


def stored_text(path: Path) -> str:
    """All text/plain and stream outputs stored in a notebook."""
    parts = []
    for cell in code_cells(load(path)):
        for out in cell["outputs"]:
            parts.append("".join(out.get("text", "")))
            parts.append("".join(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def test_defence_summary_quotes_only_numbers_the_notebooks_print():
    """Every number with three or more decimals in the defence summary is printed by a notebook,
    so the summary cannot drift from the computations it reports."""
    summary = (BOOK / "appendix_defence.md").read_text(encoding="utf-8")
    printed = "\n".join(stored_text(p) for p in NOTEBOOKS)
    quoted = re.findall(r"\d+\.\d{3,}", summary)
    assert quoted, "the defence summary quotes no computed numbers"
    missing = [q for q in quoted if q not in printed]
    assert not missing, f"appendix_defence.md quotes {missing}, which no notebook prints"
