"""Text the platform puts into Dagster markdown (descriptions, ``MetadataValue.md``): escaped, so
the UI shows it as written. Unescaped, ``<pii>`` is read as an HTML tag and vanishes ("(value )"),
and a regular expression's ``\\.`` loses its backslash."""

from __future__ import annotations

import re

# CommonMark lets any ASCII punctuation be backslash-escaped; these are the ones that can mean something.
_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~&])")


def escape(text: str) -> str:
    return _SPECIAL.sub(r"\\\1", text)


def bullet_list(items: list[str], empty: str = "none") -> str:
    return "\n".join(f"- {escape(i)}" for i in items) or empty


def table(header: tuple[str, ...], rows: list[tuple[str, ...]], empty: str = "none") -> str:
    """A markdown table, each cell escaped (a ``|`` in a name would otherwise split the cell)."""
    if not rows:
        return empty
    lines = ["| " + " | ".join(escape(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(escape(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
