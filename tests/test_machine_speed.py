"""benchmarks/machine_speed.py: the line `make test` prints before and after its passes.

It runs in a subprocess, as `make test` runs it: changing torch's thread count inside the
test process (1, then back to 2) made a later test, tests/test_own_map.py, loop on MKL's
"Parameter 6 was incorrect on entry to DLASWP" (measured: 45 minutes, then killed).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "machine_speed.py"


def test_the_line_names_the_moment_and_both_rates():
    out = subprocess.run([sys.executable, str(SCRIPT), "before", "the", "tests"], capture_output=True, text=True,
                         check=True, env={"OMP_NUM_THREADS": "2", "PATH": ""}).stdout.strip()
    pattern = (r"machine speed before the tests: (\d+\.\d) GFLOP/s on one thread, (\d+\.\d) on 2 "
               r"\(float64 4000 x 660 by 660 x 150 matrix product, mean over 1 s\)")
    match = re.fullmatch(pattern, out)
    assert match is not None, out
    assert float(match.group(1)) > 0 and float(match.group(2)) > 0
