"""pytest configuration for the whole repository: nbval compares printed estimates within
their error bars (tests/nbval_errorbars.py; README, "Reproducibility")."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "tests"))


def pytest_configure(config):
    if getattr(config.option, "nbval", False):
        import nbval_errorbars

        nbval_errorbars.install()


def pytest_terminal_summary(terminalreporter):
    if "nbval_errorbars" in sys.modules:
        line = sys.modules["nbval_errorbars"].summary()
        if line:
            terminalreporter.write_line(line)
