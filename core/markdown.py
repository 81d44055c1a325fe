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
