"""The nbval extension that compares printed estimates within their error bars: unit tests
of the comparison, and an end-to-end run of nbval on small notebooks whose stored outputs
differ from what re-execution prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import nbval_errorbars
from nbval_errorbars import reconcile

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def keep_the_session_summary_to_notebooks():
    """These synthetic comparisons must not count in the end-of-run summary of the notebooks."""
    before = len(nbval_errorbars.COMPARED)
    yield
    del nbval_errorbars.COMPARED[before:]


def test_agreeing_estimates_become_the_stored_text_whatever_the_column_widths():
    stored = "system   lambda_1\nHenon    0.4199 ± 0.0008\n"
    new = "system   lambda_1\nHenon    0.42005 ± 0.00081\n"  # another CPU, another last digit
    assert reconcile(stored, new) == (stored, [])
    # a DataFrame's text/plain realigns its columns when a number gets wider
    assert reconcile("a    0.41 ± 0.02\nb   -1.62 ± 0.02", "a     0.405 ± 0.015\nb    -1.622 ± 0.015")[1] == []


def test_disagreeing_estimates_are_kept_and_explained():
    stored = "x = 0.4199 ± 0.0008, y = 1.00 ± 0.01"
    new = "x = 0.4300 ± 0.0008, y = 1.01 ± 0.01"
    text, reasons = reconcile(stored, new)
    assert text == "x = 0.4300 ± 0.0008, y = 1.00 ± 0.01"  # only the bad one differs from stored
    assert len(reasons) == 1 and "'0.4300 ± 0.0008' differs from the stored '0.4199 ± 0.0008'" in reasons[0]


@pytest.mark.parametrize(
    "stored, new",
    [
        ("steps 4000: 0.4199 ± 0.0008", "steps 4001: 0.4199 ± 0.0008"),  # a number without error bar
        ("lambda = 0.4199 ± 0.0008", "lambda_1 = 0.4199 ± 0.0008"),  # other text
        ("0.4199 ± 0.0008, 0.1 ± 0.2", "0.4199 ± 0.0008"),  # a missing estimate
    ],
)
def test_anything_but_an_estimate_is_left_to_the_exact_comparison(stored, new):
    assert reconcile(stored, new) == (new, [])


def notebook(path: Path, source: str, stored: str) -> None:
    cell = {"cell_type": "code", "execution_count": 1, "metadata": {}, "source": source,
            "outputs": [{"output_type": "stream", "name": "stdout", "text": stored}]}
    nb = {"cells": [cell], "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb), encoding="utf-8")


def test_nbval_passes_within_error_bars_and_fails_beyond(tmp_path):
    """Three notebooks print "lambda = 0.4203 ± 0.0009" and "steps = 4000"; the stored outputs
    differ within the error bar, beyond it, and in a number without an error bar."""
    code = 'print("lambda = 0.4203 ± 0.0009")\nprint("steps = 4000")'
    notebook(tmp_path / "within.ipynb", code, "lambda = 0.4199 ± 0.0008\nsteps = 4000\n")
    notebook(tmp_path / "beyond.ipynb", code, "lambda = 0.4299 ± 0.0008\nsteps = 4000\n")
    notebook(tmp_path / "exact.ipynb", code, "lambda = 0.4199 ± 0.0008\nsteps = 4001\n")
    (tmp_path / "conftest.py").write_text(
        f"import sys\nsys.path.insert(0, {str(HERE)!r})\nimport nbval_errorbars\nnbval_errorbars.install()\n", encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "pytest", "--nbval", "--nbval-current-env", "-p", "no:cacheprovider",
                          "-rA", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    out = run.stdout
    assert "PASSED within.ipynb::Cell 0" in out, out[-3000:]
    assert "FAILED beyond.ipynb::Cell 0" in out and "FAILED exact.ipynb::Cell 0" in out, out[-3000:]
    assert "differs from the stored '0.4299 ± 0.0008' by 0.0096" in out, out[-3000:]
