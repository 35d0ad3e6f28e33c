"""nbval, with printed estimates compared within their error bars.

Strict nbval compares every re-executed output with the stored one character for
character. That is right for everything a computation controls, and wrong for the last
digits of a chaotic estimate: the CPU's floating-point kernels (AVX2 or AVX-512, MKL's code
path on Intel or AMD, the thread count) round differently, a chaotic orbit amplifies the
difference, and the re-executed estimate is a different sample of the same quantity.

This plugin wraps nbval's comparison of one cell. In every text output, each
``value ± error`` (as printed by :func:`chaosgrad.estimates.pm`) is read back from the
stored and the new output; if both outputs have the same estimates in the same places and
the same text everywhere else (runs of spaces may differ: table columns realign), each
pair must agree within its error bars (:func:`chaosgrad.estimates.disagreement`: values
within ``SIGMAS`` combined error bars, error bars within a factor ``MAX_ERROR_RATIO``).
Agreeing estimates are then replaced by the stored text and nbval's exact comparison runs
on the rest, so every other character, every number without an error bar included, is still
compared exactly. A failure names each estimate that disagrees and by how much.

Loaded from the repository's conftest.py whenever pytest runs with ``--nbval``.
"""

from __future__ import annotations

import copy
import math
import re

from chaosgrad.estimates import disagreement, find_printed

__all__ = ["COMPARED", "install", "reconcile", "summary"]

_SPACES = re.compile(r"[ \t]+")

#: Every pair of printed estimates compared in this session: (stored text, new text,
#: difference of the values in combined error bars). Summarised at the end of the run.
COMPARED: list[tuple[str, str, float]] = []


def _skeleton(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with each estimate replaced by a marker and runs of spaces collapsed."""
    parts, last = [], 0
    for start, end in spans:
        parts += [text[last:start], "\x00"]
        last = end
    parts.append(text[last:])
    return _SPACES.sub(" ", "".join(parts))


def reconcile(stored: str, new: str) -> tuple[str, list[str]]:
    """Return ``new`` with every estimate that agrees with its stored counterpart replaced by
    the stored text, and the reasons for each one that does not.

    If the two texts differ in anything but estimates and runs of spaces, ``new`` is returned
    unchanged (nbval then reports the difference) with an empty list.
    """
    old_found, new_found = find_printed(stored), find_printed(new)
    if not old_found or len(old_found) != len(new_found):
        return new, []
    if _skeleton(stored, [(p.start, p.end) for p in old_found]) != _skeleton(new, [(p.start, p.end) for p in new_found]):
        return new, []
    for o, n in zip(old_found, new_found):
        combined = math.hypot(max(o.error, o.error_unit / 2), max(n.error, n.error_unit / 2))
        COMPARED.append((o.text, n.text, abs(n.value - o.value) / combined))
    reasons = [disagreement(o, n) for o, n in zip(old_found, new_found)]
    failures = [r for r in reasons if r is not None]
    if not failures:
        return stored, []
    # keep the disagreeing estimates, so nbval's diff shows exactly those
    pieces, last = [], 0
    for o, n, r in zip(old_found, new_found, reasons):
        pieces += [new[last : n.start], o.text if r is None else n.text]
        last = n.end
    pieces.append(new[last:])
    return "".join(pieces), failures


def _text_fields(output: dict) -> list[tuple[dict, str, str]]:
    """(container, field, pairing key) of every text nbval compares in one output.

    nbval pairs streams by their name (stdout, stderr) and display data by MIME type.
    """
    if output.get("output_type") == "stream":
        return [(output, "text", output.get("name", "stream"))]
    data = output.get("data", {})
    return [(data, mime, mime) for mime, value in data.items() if isinstance(value, str) and not mime.startswith("image/")]


def reconcile_outputs(test: list, ref: list) -> tuple[list, list[str]]:
    """Apply :func:`reconcile` to every text field of a cell's outputs, paired as nbval pairs them
    (the i-th occurrence of a key in the new outputs with the i-th in the stored ones)."""
    test = copy.deepcopy(test)
    stored: dict[str, list[str]] = {}
    for out in ref:
        for container, field, key in _text_fields(out):
            stored.setdefault(key, []).append(container[field])
    seen: dict[str, int] = {}
    notes = []
    for out in test:
        for container, field, key in _text_fields(out):
            i = seen.get(key, 0)
            seen[key] = i + 1
            if i < len(stored.get(key, [])):
                container[field], failures = reconcile(stored[key][i], container[field])
                notes += [f"[{key}] {f}" for f in failures]
    return test, notes


def summary() -> str | None:
    """One line on the estimates compared so far (``None`` if there were none)."""
    if not COMPARED:
        return None
    changed = [z for old, new, z in COMPARED if old != new]
    line = f"nbval error bars: {len(COMPARED)} printed estimates compared, {len(changed)} printed differently"
    if changed:
        line += f" (largest difference {max(changed):.2f} combined error bars, median {sorted(changed)[len(changed) // 2]:.2f})"
    return line


def install() -> None:
    """Wrap ``nbval.plugin.IPyNbCell.compare_outputs`` (once)."""
    from nbval import plugin

    original = plugin.IPyNbCell.compare_outputs
    if getattr(original, "_errorbars", False):
        return

    def compare_outputs(self, test, ref, skip_compare=None):
        test, notes = reconcile_outputs(test, ref)
        same = original(self, test, ref, skip_compare)
        if not same and notes:
            self.comparison_traceback.append(
                "Estimates that disagree beyond their error bars (chaosgrad.estimates.disagreement):\n  "
                + "\n  ".join(notes)
            )
        return same

    compare_outputs._errorbars = True
    plugin.IPyNbCell.compare_outputs = compare_outputs
