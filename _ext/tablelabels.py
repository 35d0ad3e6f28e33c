"""Readable headers for the book's tables of results: ``sigma_w2`` shown as σ_w².

The notebooks name their DataFrame columns and rows in ASCII (``lambda_1``, ``sigma_w2``,
``(1/2) ln chi1``, ``N * Delta``), because the plain-text form of a table is what nbval
compares and what a reader's terminal prints. In the rendered book the header and row-label
cells of every DataFrame (``<th>``) are set with symbols instead: Greek letters for their
names, subscripts after ``_``, superscripts after ``^`` and for the variances ``sigma_w2``
and ``sigma_b2``. Values (``<td>``) are never touched. :func:`readable` holds the rules,
:func:`readable_html` applies them to a table, and the transform to every DataFrame output
of the HTML build.
"""

from __future__ import annotations

import re

from docutils import nodes
from sphinx.transforms import SphinxTransform

GREEK = {"alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "Delta": "Δ", "epsilon": "ε",
         "eta": "η", "theta": "θ", "kappa": "κ", "lambda": "λ", "mu": "μ", "nu": "ν", "xi": "ξ",
         "rho": "ρ", "sigma": "σ", "tau": "τ", "phi": "φ", "Phi": "Φ", "chi": "χ", "psi": "ψ",
         "omega": "ω"}
_GREEK = re.compile(r"(?<![A-Za-z])(d?)(" + "|".join(sorted(GREEK, key=len, reverse=True)) + r")(?![a-z])")
_VARIANCE = re.compile(r"σ_([wb])2(?![\w])")
_CHI = re.compile(r"χ(\d)")
_SUB = re.compile(r"(?<![A-Za-z])(d?)([A-Za-zα-ωΑ-Ω])_(\([^)]*\)|[A-Za-z0-9]+(?:[+-]1(?![\d.]))?)")
_SUP = re.compile(r"\^([A-Za-z0-9]+)")


def readable(label: str) -> str:
    """An ASCII label as HTML with symbols: ``"critical sigma_w2"`` ->
    ``"critical σ<sub>w</sub><sup>2</sup>"``, ``"lambda_u+1"`` -> ``"λ<sub>u+1</sub>"``,
    ``"(1/2) ln chi1"`` -> ``"(1/2) ln χ<sub>1</sub>"``, ``"N * Delta"`` -> ``"NΔ"``.
    Words that merely contain a Greek name (``"alphabet"``, ``"param_jvps"``) are kept."""
    text = label.replace("N * Delta", "NΔ")
    text = _GREEK.sub(lambda m: m.group(1) + GREEK[m.group(2)], text)
    text = _VARIANCE.sub(r"σ<sub>\1</sub><sup>2</sup>", text)
    text = _CHI.sub(r"χ<sub>\1</sub>", text)
    text = _SUB.sub(lambda m: f"{m.group(1)}{m.group(2)}<sub>{m.group(3).strip('()') if m.group(3).startswith('(') else m.group(3)}</sub>", text)
    return _SUP.sub(r"<sup>\1</sup>", text)


def readable_html(table: str) -> str:
    """``table`` (pandas' HTML) with every header and row-label cell made :func:`readable`."""
    return re.sub(r"(<th\b[^>]*>)(.*?)(</th>)", lambda m: m.group(1) + readable(m.group(2)) + m.group(3),
                  table, flags=re.S)


class ReadableTableLabels(SphinxTransform):
    default_priority = 700

    def apply(self, **kwargs) -> None:
        if self.app.builder.format != "html":
            return
        for raw in list(self.document.findall(nodes.raw)):
            if "html" in raw.get("format", "").split() and 'class="dataframe"' in raw.astext():
                raw.replace_self(nodes.raw(raw.rawsource, readable_html(raw.astext()), format="html"))


def setup(app):
    app.add_transform(ReadableTableLabels)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
