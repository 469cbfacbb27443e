"""Markdown descriptions rendered to HTML that is safe to put in a page.

Markdown allows raw HTML, so the output is sanitised with nh3 (an allow-list of tags and
attributes; scripts, event handlers and `javascript:` links are dropped) and links get
`rel="noopener noreferrer"`.
"""

from __future__ import annotations

from functools import lru_cache

import markdown as md
import nh3

TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5",
    "h6", "hr", "i", "li", "ol", "p", "pre", "s", "strong", "sub", "sup", "table", "tbody",
    "td", "th", "thead", "tr", "ul",
}  # fmt: skip
ATTRIBUTES = {"a": {"href", "title"}, "abbr": {"title"}, "td": {"align"}, "th": {"align"}}


@lru_cache(maxsize=512)
def render_markdown(text: str) -> str:
    """Markdown to sanitised HTML (cached: descriptions are rendered on every list)."""
    if not text:
        return ""
    html = md.markdown(text, extensions=["fenced_code", "tables", "sane_lists"])
    return nh3.clean(
        html,
        tags=TAGS,
        attributes=ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer",
    )
