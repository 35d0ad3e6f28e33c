"""Keep the punctuation that follows an inline formula on the formula's line (HTML).

A browser may break a line between an inline formula and the text after it, so a long
formula at the end of a line leaves its full stop or closing parenthesis alone at the start
of the next ("$\\lambda_1 = \\tfrac12\\ln\\chi_1 - (3\\kappa-1)/(4N)$." shows a lone "."). This
transform wraps every inline math node and the punctuation that directly follows it (up to
the next space) in ``<span class="math-nowrap">``, which ``_static/book.css`` keeps on one
line. Other builders see an ordinary inline node (LaTeX does not break there anyway).
"""

from __future__ import annotations

import re

from docutils import nodes
from sphinx.transforms import SphinxTransform

#: punctuation that belongs to the formula before it
TRAILING = re.compile(r"^[.,;:!?)\]’”]+")


class GlueMathPunctuation(SphinxTransform):
    default_priority = 700

    def apply(self, **kwargs) -> None:
        for math in list(self.document.findall(nodes.math)):
            parent = math.parent
            if parent is None or isinstance(parent, nodes.inline) and "math-nowrap" in parent["classes"]:
                continue
            index = parent.index(math)
            after = parent[index + 1] if index + 1 < len(parent) else None
            if not isinstance(after, nodes.Text):
                continue
            match = TRAILING.match(str(after))
            if not match:
                continue
            rest = str(after)[match.end():]
            del parent[index + 1]  # by position: Text nodes compare equal by content
            del parent[index]
            glue = nodes.inline(classes=["math-nowrap"])
            glue += math
            glue += nodes.Text(match.group(0))
            parent.insert(index, glue)
            if rest:
                parent.insert(index + 1, nodes.Text(rest))


def setup(app):
    app.add_transform(GlueMathPunctuation)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
