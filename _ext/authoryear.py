"""Author–year labels for the bibliography, matching the author–year citations in the text.

pybtex's standard styles label the reference list ``[1]`` or ``[Ose68]``. This Sphinx
extension registers the pybtex style ``authoryear``: the ``unsrt`` formatting (which links
``doi`` and arXiv ``eprint`` fields), entries sorted by the name they are cited by and the
year, each labelled ``Oseledets 1968``, ``Ni and Talnikar 2019``, ``Poole et al. 2016``, and
two works of one author and year ``Ni 2025a``, ``Ni 2025b``. The text cites by the same label
(``bibtex_reference_style: label``), so a citation reads ``[Ni 2025b]`` exactly as the list
does; sphinxcontrib-bibtex's own author-year citations would print ``[Ni, 2025]`` for both.
"""

from __future__ import annotations

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.sorting.author_year_title import SortingStyle


def surname(person) -> str:
    """The printed surname of a pybtex person, without LaTeX braces."""
    return Text.from_latex(" ".join(person.prelast_names + person.last_names)).render_as("text")


def author_year(entry) -> str:
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [surname(p) for p in persons]
    if len(names) > 1 and names[-1] == "others":  # "A and others" in BibTeX
        names = names[:1] * 3
    if not names:  # a corporate or anonymous work: its title's first words
        who = Text.from_latex(entry.fields.get("organization", entry.fields["title"])).render_as("text")
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who} {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabelStyle(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        labels = [author_year(entry) for entry in sorted_entries]
        seen: dict[str, int] = {}
        for label in labels:  # two works by the same authors in one year: 2019a, 2019b
            if labels.count(label) == 1:
                yield label
            else:
                seen[label] = seen.get(label, 0) + 1
                yield label + "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]


class AuthorYearSortingStyle(SortingStyle):
    """By the name the label shows: a work with no author (a collaboration, an organisation)
    sorts under the name it is cited by, not before every author."""

    def sorting_key(self, entry):
        author_key, year, title = super().sorting_key(entry)
        return (author_key or author_year(entry).rsplit(" ", 1)[0].lower(), year, title)


class AuthorYearStyle(UnsrtStyle):
    default_label_style = AuthorYearLabelStyle
    default_sorting_style = AuthorYearSortingStyle


register_plugin("pybtex.style.labels", "authoryear", AuthorYearLabelStyle)
register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)


def setup(app):
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
