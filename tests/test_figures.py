"""Figures fit for slides: the legend checks of chaosgrad.plotting and the exporter behind
``make figures`` (tools/export_figures.py), run on small notebooks written here."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from chaosgrad.plotting import figure_problems, legend_overlaps  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("export_figures", ROOT / "tools" / "export_figures.py")
export_figures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(export_figures)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_a_legend_over_a_line_is_found_and_one_beside_it_is_not():
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 1], label="flat line at the top")
    ax.set(xlabel="x", ylabel="y", ylim=(0, 1.05))
    ax.legend(loc="upper center")
    assert legend_overlaps(fig) and legend_overlaps(fig)[0][1] > 10
    ax.legend(loc="lower center")
    assert legend_overlaps(fig) == []


def test_a_line_crossing_a_legend_between_its_vertices_is_found():
    """Two vertices far outside the box: only sampling along the segment sees the crossing."""
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0.9, 0.9], label="two vertices, both outside the legend")
    ax.set(xlabel="x", ylabel="y", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0.95))
    assert legend_overlaps(fig)


def test_markers_and_filled_bars_count_as_data():
    fig, (left, right) = plt.subplots(1, 2)
    left.plot([0.5], [0.95], "o", label="one marker under the legend")
    left.set(xlabel="x", ylabel="y", xlim=(0, 1), ylim=(0, 1))
    left.legend(loc="upper center")
    right.hist([0.5] * 10, bins=[0, 1], label="a filled bar")
    right.set(xlabel="x", ylabel="count")
    right.legend(loc="center")
    found = dict(legend_overlaps(fig))
    assert set(found) == {"legend of panel 0 (untitled)", "legend of panel 1 (untitled)"}, found


def test_figure_problems_names_small_legends_and_missing_labels():
    fig, (left, right) = plt.subplots(1, 2)
    left.plot([0, 1], [0, 1], label="y = x")
    left.set(xlabel="x", ylabel="y")
    left.legend(loc="upper left", fontsize=8)
    right.plot([0, 1], [1, 0])
    assert figure_problems(fig) == ["legend of panel 0 (untitled): text of 8 pt, below the 9 pt minimum",
                                    "panel 1 (untitled) has data but no x or y axis label"]


def test_category_axes_and_colorbars_need_no_label():
    fig, ax = plt.subplots()
    mesh = ax.pcolormesh([[0, 1], [1, 0]])
    fig.colorbar(mesh, label="value")
    ax.set(xlabel="x", yticks=[0.5, 1.5], yticklabels=["first", "second"])
    assert figure_problems(fig) == []


def test_a_figure_legend_outside_the_panels_passes():
    fig, axes = plt.subplots(1, 2, layout="constrained")
    for ax in axes:
        ax.plot([0, 1], [0, 1], label="y = x")
        ax.set(xlabel="x", ylabel="y")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center")
    assert figure_problems(fig) == []


@pytest.mark.parametrize("notebook, name, stem", [
    ("ch03_backprop_failure.ipynb", "fig-ch03-remedies", "ch03-remedies"),
    ("ch01_lyapunov_spectrum.ipynb", "fig-henon", "ch01-henon"),
    ("appendix_corrections.ipynb", "fig-corrections-stable-layers", "corrections-stable-layers"),
])
def test_exported_files_are_named_chapter_then_figure(notebook, name, stem):
    assert export_figures.file_stem(Path(notebook), name) == stem


def notebook(cells: list[tuple[str, dict]]) -> dict:
    return {"cells": [{"cell_type": "code", "metadata": meta, "source": src, "outputs": [], "execution_count": None}
                      for src, meta in cells], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def png_dpi(path: Path) -> float:
    """Resolution stored in a PNG's pHYs chunk, in dots per inch."""
    data = path.read_bytes()
    at = data.index(b"pHYs")
    per_metre = struct.unpack(">I", data[at + 4:at + 8])[0]
    return per_metre * 0.0254


def test_export_writes_a_vector_pdf_and_a_300_dpi_png(tmp_path):
    figure = {"mystnb": {"figure": {"name": "fig-ch09-line", "caption": "A line."}}}
    nb = tmp_path / "ch09_example.ipynb"
    nb.write_text(json.dumps(notebook([
        ("import matplotlib.pyplot as plt\nx = [0, 1, 2]", {}),
        ("fig, ax = plt.subplots()\nax.plot(x, x, label='y = x')\nax.set(xlabel='x', ylabel='y')\n"
         "ax.legend(loc='upper left')\nplt.show()", figure),
    ])))
    written, problems = export_figures.export(nb, tmp_path)
    assert problems == []
    assert sorted(p.name for p in written) == ["ch09-line.pdf", "ch09-line.png"]
    assert (tmp_path / "ch09-line.pdf").read_bytes().startswith(b"%PDF")
    assert b"CreationDate" not in (tmp_path / "ch09-line.pdf").read_bytes()  # reruns give the same file
    assert png_dpi(tmp_path / "ch09-line.png") == pytest.approx(300, abs=0.1)


def test_export_refuses_unnamed_figures_and_small_legends(tmp_path):
    nb = tmp_path / "ch09_example.ipynb"
    named = {"mystnb": {"figure": {"name": "fig-ch09-small", "caption": "Small legend."}}}
    nb.write_text(json.dumps(notebook([
        ("import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([0, 1])\nplt.show()", {}),
        ("fig, ax = plt.subplots()\nax.plot([0, 1], [0, 1], label='a')\nax.set(xlabel='x', ylabel='y')\n"
         "ax.legend(loc='upper left', fontsize=7)\nplt.show()", named),
    ])))
    written, problems = export_figures.export(nb, tmp_path)
    assert [p.name for p in written] == ["ch09-small.pdf", "ch09-small.png"]
    assert problems == ["ch09_example.ipynb, code cell 0: draws 1 figure(s) without a mystnb figure name",
                        "ch09_example.ipynb, fig-ch09-small: legend of panel 0 (untitled): text of 7 pt, "
                        "below the 9 pt minimum"]
