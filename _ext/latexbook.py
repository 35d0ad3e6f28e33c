"""The book's structure and results tables in the PDF (``make pdf``; the LaTeX builder only).

Sphinx's LaTeX builder makes every top-level section of the root document a chapter, drops
the parts of ``_toc.yml`` (and names the table of contents after the first part), prints a
pandas DataFrame as its ``text/plain`` repr in a monospaced block, and gives a sphinx-proof
``prf:proof`` an admonition box with an empty title bar. This extension, for the ``latex``
builder only (the HTML book is untouched), post-transforms the assembled document:

- the Preface's sections are sections of one unnumbered chapter (``\\chapter{Preface}`` is
  written by ``book/intro.md``), not chapters of their own;
- each part of ``_toc.yml`` starts with ``\\part{...}`` ("Part I — Unstable networks" is
  part I, "Unstable networks"); the part "Appendices" is an unnumbered part followed by
  ``\\appendix``, so that the appendices are lettered, and the table of contents is headed
  "Contents";
- every output that carries a DataFrame's HTML table (``<table class="dataframe">``) is
  typeset as a table (booktabs rules, numeric columns right-aligned so that their digits line
  up, a column of estimates "value ± error" aligned on its "±") by :func:`dataframe_latex`; the LaTeX macro
  ``\\chaosgradtable`` (``_config.yml``) sets it in ``\\small`` or, where that is too wide,
  ``\\footnotesize`` or ``\\scriptsize``, and logs any table it still has to shrink;
- a printed output too wide for the text at the code's size is set smaller (down to
  ``\\scriptsize``) rather than wrapped line by line;
- a proof is set as text, "*Proof.* ... □", without a box.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from docutils import nodes
from sphinx import addnodes
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util.texescape import escape
from tablelabels import readable

#: "Part I — Unstable networks" -> "Unstable networks" (LaTeX numbers the parts itself)
PART_PREFIX = re.compile(r"^Part\s+[IVXLC]+\s*[—–:-]\s*")
#: a cell that reads as a number: "0.4199 ± 0.0007", "-2.0027", "< 1e-13", "400-400", "8 / 8"
NUMERIC = re.compile(r"^[<>≈~]?\s*[-+−]?[\d.,]*\d")
#: a value column longer than this is set as a ragged paragraph column
LONG_TEXT = 45
SUBSCRIPTS = {chr(0x2080 + i): str(i) for i in range(10)}


class _TableParser(HTMLParser):
    """The cells of pandas' ``DataFrame.to_html``: rows of (tag, text, rowspan, colspan)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.head: list[list[tuple[str, str, int, int]]] = []
        self.body: list[list[tuple[str, str, int, int]]] = []
        self.section: list | None = None
        self.cell: list | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "thead":
            self.section = self.head
        elif tag == "tbody":
            self.section = self.body
        elif tag == "tr" and self.section is not None:
            self.section.append([])
        elif tag in ("th", "td") and self.section is not None:
            self.cell = [tag, "", int(attrs.get("rowspan") or 1), int(attrs.get("colspan") or 1)]

    def handle_endtag(self, tag):
        if tag in ("th", "td") and self.cell is not None:
            tag, text, rowspan, colspan = self.cell
            self.section[-1].append((tag, " ".join(text.split()), rowspan, colspan))
            self.cell = None
        elif tag in ("thead", "tbody"):
            self.section = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[1] += data


def tex(text: str, numeric: bool = False) -> str:
    """``text`` escaped for LaTeX; a number's minus sign is a minus (−), not a hyphen, and
    subscript digits (v₁) are subscripts."""
    if numeric:
        text = re.sub(r"(?<![\w.)])-(?=[\d.])", "−", text)
    out = escape(text, "xelatex")
    out = re.sub("[₀-₉]+", lambda m: r"\textsubscript{%s}" % "".join(SUBSCRIPTS[c] for c in m[0]), out)
    # "value ± error" never breaks
    return out.replace(" ± ", "~±~")


def label_tex(text: str) -> str:
    """A header or row label with symbols for its ASCII names (``sigma_w2`` as σ_w², the
    rules of :func:`tablelabels.readable`, shared with the HTML book), escaped for LaTeX."""
    parts = re.split(r"<(sub|sup)>(.*?)</\1>", readable(text))
    out = [tex(parts[0])]
    for i in range(1, len(parts), 3):
        command = "textsubscript" if parts[i] == "sub" else "textsuperscript"
        out.append(r"\%s{%s}" % (command, tex(parts[i + 1])) + tex(parts[i + 2]))
    return "".join(out)


def _lines(text: str, width: int) -> list[str]:
    """``text`` broken at spaces into lines of about ``width`` characters."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def _stack(text: str, width: int, align: str) -> str:
    """A header cell, stacked over lines of about ``width`` characters when longer."""
    lines = _lines(text, width) if len(text) > width + 6 else [text]
    if len(lines) == 1:
        return label_tex(text)
    return r"\begin{tabular}[b]{@{}%s@{}}%s\end{tabular}" % (align, r"\\".join(label_tex(x) for x in lines))


def dataframe_latex(html: str) -> str | None:
    """The LaTeX of the DataFrame table in ``html`` (pandas' ``to_html``), or ``None`` if it
    holds none: one header row (the column names, and the index names over the index
    columns), a row per DataFrame row with a repeated index label left blank, numeric columns
    right-aligned. Returns ``\\chaosgradtable{<tabular>}{<tabular transposed>}`` (the second
    empty where the index or the header has more than one level)."""
    if 'class="dataframe' not in html:
        return None
    parser = _TableParser()
    parser.feed(html)
    if not parser.body:
        return None
    nindex = sum(1 for cell in parser.body[0] if cell[0] == "th")
    # the body, with the cells that rowspans cover put back as blanks
    rows: list[list[str]] = []
    pending = [0] * nindex
    for raw in parser.body:
        cells = list(raw)
        row = []
        for level in range(nindex):
            if pending[level] > 0:
                pending[level] -= 1
                row.append("")
            elif cells and cells[0][0] == "th":
                _, text, rowspan, _ = cells.pop(0)
                pending[level] = rowspan - 1
                row.append(text)
            else:
                row.append("")
        row.extend(text for _, text, _, _ in cells)
        rows.append(row)
    ncols = max(len(r) for r in rows)
    rows = [r + [""] * (ncols - len(r)) for r in rows]
    # header rows as (text, colspan) lists; pandas writes the index names in a second row
    head = [[(text, colspan) for _, text, _, colspan in r] for r in parser.head]
    head = [r for r in head if any(text for text, _ in r)]
    if (len(head) == 2 and all(c == 1 for _, c in head[0] + head[1]) and len(head[1]) == ncols
            and not any(text for text, _ in head[0][:nindex]) and not any(text for text, _ in head[1][nindex:])):
        head = [head[1][:nindex] + head[0][nindex:]]
    transposed = ""
    if nindex == 1 and len(head) <= 1 and len(rows) > 1:
        # the same table turned a quarter, for LaTeX to take where the first is too wide
        names = head[0] if head else [("", 1)] * ncols
        if all(c == 1 for _, c in names):
            tail = [[names[j][0]] + [r[j] for r in rows] for j in range(1, ncols)]
            transposed = _tabular([[(names[0][0], 1)] + [(r[0], 1) for r in rows]], tail, 1)
    return "\\chaosgradtable{%%\n%s}{%%\n%s}\n" % (_tabular(head, rows, nindex), transposed)


def _tabular(head: list[list[tuple[str, int]]], rows: list[list[str]], nindex: int) -> str:
    """A ``tabular``: header rows of (text, colspan), body rows, ``nindex`` index columns. A
    column of estimates "value ± error" is two columns joined by "±", so that the values of
    its rows end, and their errors start, one under the other."""
    ncols = len(rows[0])
    numeric = [all(NUMERIC.match(r[j]) for r in rows if r[j]) and any(r[j] for r in rows) for j in range(ncols)]
    estimates = [j >= nindex and numeric[j] and 2 * sum(r[j].count(" ± ") == 1 for r in rows) >= sum(bool(r[j]) for r in rows)
                 for j in range(ncols)]
    longest = [max(len(r[j]) for r in rows) for j in range(ncols)]
    # the first LaTeX column of each DataFrame column (1-based, for \cmidrule)
    first = [1 + sum(2 if estimates[k] else 1 for k in range(j)) for j in range(ncols + 1)]
    specs = []
    for j in range(ncols):
        if estimates[j]:
            specs.append(r"r@{\ ±\ }l")
        elif numeric[j]:
            specs.append("r")
        elif longest[j] > LONG_TEXT:
            specs.append(r">{\raggedright\arraybackslash}p{%.2f\linewidth}" % (0.45 if j < nindex else 0.35))
        else:
            specs.append("l")
    lines = [r"\begin{tabular}{@{}%s@{}}" % "".join(specs), r"\toprule"]
    for r in head:
        cells, rules, col = [], [], 0
        for text, colspan in r:
            end = min(col + colspan, ncols)
            span = first[end] - first[min(col, ncols)]
            if colspan > 1 or span > 1:
                align = "c" if colspan > 1 or estimates[col] else "r"
                width = max(12, max(longest[col:end], default=12))
                cells.append(r"\multicolumn{%d}{%s}{%s}" % (span, align, _stack(text, width, align)))
                if text and colspan > 1:
                    rules.append(r"\cmidrule(lr){%d-%d}" % (first[col], first[end] - 1))
            else:
                align = "r" if numeric[min(col, ncols - 1)] else "l"
                cells.append(_stack(text, max(12, longest[col] if col < ncols else 12), align))
            col += colspan
        lines.append(" & ".join(cells) + r" \\" + "".join(rules))
    if head:
        lines.append(r"\midrule")
    for i, r in enumerate(rows):
        # a new group of a multi-level index: a little space before it
        if i and nindex > 1 and r[0]:
            lines.append(r"\addlinespace")
        cells = []
        for j, text in enumerate(r):
            if j < nindex and not numeric[j]:
                cells.append(label_tex(text))
            elif not estimates[j]:
                cells.append(tex(text, numeric[j]))
            elif text.count(" ± ") == 1:
                cells.append(" & ".join(tex(part, True) for part in text.split(" ± ")))
            else:  # a blank, or a value without an error bar
                cells.append(r"\multicolumn{2}{c}{%s}" % tex(text, True))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


class DataFrameTables(SphinxPostTransform):
    """Each output with a DataFrame's HTML table becomes a typeset table (before myst-nb's
    ``SelectMimeType``, priority 4, picks the ``text/plain`` repr for LaTeX)."""

    default_priority = 3
    builders = ("latex",)

    def run(self, **kwargs) -> None:
        for bundle in list(self.document.findall(nodes.container)):
            if bundle.get("nb_element") != "mime_bundle":
                continue
            for mime in bundle.children:
                if mime.get("mime_type") != "text/html":
                    continue
                html = "".join(n.astext() for n in mime.findall(nodes.raw))
                latex = dataframe_latex(html)
                if latex is not None:
                    bundle.replace_self(nodes.raw("", latex, format="latex"))
                    break


class WideOutputs(SphinxPostTransform):
    """A printed output with lines too long for the text width at the code's size (``\\small``,
    about 98 characters) is set smaller, down to ``\\scriptsize``, instead of being wrapped
    with continuation marks (↪) where that is enough (a table printed by ``to_string``)."""

    default_priority = 5
    builders = ("latex",)
    #: (longest line, font size) from the largest size
    SIZES = ((98, None), (110, r"\footnotesize"), (10**9, r"\scriptsize"))

    def run(self, **kwargs) -> None:
        for block in list(self.document.findall(nodes.literal_block)):
            if "output" not in block.get("classes", []):
                continue
            longest = max((len(line) for line in block.astext().splitlines()), default=0)
            size = next(size for limit, size in self.SIZES if longest <= limit)
            if size is not None:
                block.replace_self([nodes.raw("", "\\begingroup\\fvset{fontsize=%s}\n" % size, format="latex"),
                                    block.deepcopy(), nodes.raw("", "\\endgroup\n", format="latex")])


class BookStructure(SphinxPostTransform):
    """Parts, lettered appendices and a one-chapter Preface in the assembled LaTeX document."""

    default_priority = 5
    builders = ("latex",)

    def run(self, **kwargs) -> None:
        root = self.config.root_doc
        # the first file of each part, from the root document's toctrees
        starts: dict[str, str] = {}
        for toctree in self.env.get_doctree(root).findall(addnodes.toctree):
            files = [name for _, name in toctree["entries"]]
            if toctree.get("caption") and files:
                starts[files[0]] = toctree["caption"]
        for sof in list(self.document.findall(addnodes.start_of_file)):
            caption = starts.get(sof.get("docname"))
            if caption is None:
                continue
            if caption.lower().startswith("appendi"):
                latex = ("\\clearpage\\phantomsection\\addcontentsline{toc}{part}{%s}\n\\part*{%s}\n\\appendix\n"
                         % (escape(caption, "xelatex"), escape(caption, "xelatex")))
            else:
                title = escape(PART_PREFIX.sub("", caption), "xelatex")
                latex = "\\part{%s}\n" % title
            sof.parent.insert(sof.parent.index(sof), nodes.raw("", latex, format="latex"))
        # the Preface: the root document's own sections one level down (an untitled section
        # around them adds one level in Sphinx's LaTeX writer), under its \chapter{Preface}
        preface = next(iter(self.document.findall(nodes.section)), None)
        if preface is not None:
            sections = [child for child in preface.children if isinstance(child, nodes.section)]
            if sections:
                wrapper = nodes.section()
                preface.insert(preface.index(sections[0]), wrapper)
                for section in sections:
                    preface.remove(section)
                    wrapper.append(section)


class PlainProofs(SphinxPostTransform):
    """A proof as text: "*Proof.* ... □" instead of an admonition box without a title."""

    default_priority = 5
    builders = ("latex",)

    def run(self, **kwargs) -> None:
        try:
            from sphinx_proof.nodes import proof_node
        except ImportError:  # pragma: no cover
            return
        for proof in list(self.document.findall(proof_node)):
            for box in [c for c in proof.children if isinstance(c, nodes.admonition)]:
                children = list(box.children)
                first = next((p for p in children if isinstance(p, nodes.paragraph)), None)
                if first is not None and first.children and isinstance(first[0], nodes.Text) \
                        and first[0].astext().startswith("Proof. "):
                    rest = first[0].astext()[len("Proof. "):]
                    first.replace(first[0], nodes.Text(rest))
                    first.insert(0, nodes.raw("", r"\textit{Proof.}\enspace ", format="latex"))
                last = children[-1] if children else None
                qed = r"\hspace*{\fill}\nobreak\enspace\ensuremath{\mdlgwhtsquare}"
                if isinstance(last, nodes.paragraph):
                    last.append(nodes.raw("", qed, format="latex"))
                    tail = []
                else:
                    tail = [nodes.raw("", "\\par\\nobreak\\noindent" + qed + "\\par\n", format="latex")]
                box.replace_self([nodes.raw("", "\\begin{chaosgradproof}\n", format="latex"), *children, *tail,
                                  nodes.raw("", "\\end{chaosgradproof}\n", format="latex")])


def _no_contentsname(app) -> None:
    """Sphinx names the table of contents after the root's first toctree caption ("Part I —
    Unstable networks"); without one it is LaTeX's "Contents"."""
    if app.builder.name == "latex":
        app.builder.get_contentsname = lambda indexfile: ""


def setup(app):
    app.add_post_transform(DataFrameTables)
    app.add_post_transform(WideOutputs)
    app.add_post_transform(BookStructure)
    app.add_post_transform(PlainProofs)
    app.connect("builder-inited", _no_contentsname)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
