"""What the platform writes into Dagster markdown is shown as written: rendered by a real
CommonMark renderer (markdown-it-py, which the UI's renderer agrees with on these rules)."""

from __future__ import annotations

import html
import re

import pytest
from markdown_it import MarkdownIt

from core.markdown import bullet_list, escape, table

TEXTS = [
    "line 3: n, email: unique_key (value <pii>)",
    r"line 7: employee_email: str_matches('^[a-z.]+@example\.com$')",
    r"line 9: code: str_matches('^E\d{6}_[A-Z]*$') (value *E12* #1 [x](y) `z` ~w~ a|b &amp;)",
]


def _visible(markdown: str) -> list[str]:
    """The text of each list item as the renderer shows it (tags stripped, entities decoded)."""
    items = re.findall(r"<li>(.*?)</li>", MarkdownIt("commonmark").render(markdown), flags=re.S)
    return [html.unescape(re.sub(r"<[^>]+>", "", i)) for i in items]


@pytest.mark.parametrize("text", TEXTS)
def test_escaped_text_renders_as_written(text: str) -> None:
    assert _visible(bullet_list([text])) == [text]


def test_unescaped_text_does_not_which_is_why_escaping_is_needed() -> None:
    assert _visible(f"- {TEXTS[0]}") != [TEXTS[0]]  # <pii> is taken for an HTML tag
    assert _visible(f"- {TEXTS[1]}") != [TEXTS[1]]  # \. loses its backslash


def test_an_empty_list_says_none() -> None:
    assert bullet_list([]) == "none" and escape("plain words") == "plain words"


def test_a_table_renders_its_cells_as_written() -> None:
    out = MarkdownIt("commonmark").enable("table").render(table(("column", "from"), [
        ("total_revenue", "ods/mobility/ods_trips.total_amount"), ("a|b", "x_<y>*")]))
    cells = [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td>(.*?)</td>", out, flags=re.S)]
    assert cells == ["total_revenue", "ods/mobility/ods_trips.total_amount", "a|b", "x_<y>*"]
    assert table(("c",), []) == "none"
