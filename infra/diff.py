"""A promotion review: what differs in substance between two environments' declarations.

Every value is normalised before comparing: the environment's own names (its resource prefix, account
id, Glue database prefix and name) become ``<prefix>``, ``<account>``, ``<db_prefix>`` and ``<env>``, so
``s3://acme-lake-dev-landing/landing`` and ``s3://acme-lake-prod-landing/landing`` are the same setting
and only real differences remain (a settle time, a missing section, another kind of catalog).
"""

from __future__ import annotations

import re
from typing import Any

from resources.environment import Environment

__all__ = ["diff", "normalise"]

_MISSING = object()
_IGNORED = {"name", "description"}  # they name the environment, nothing else


def _tokens(env: Environment) -> list[tuple[str, str]]:
    tokens = []
    if env.aws:
        tokens += [(env.aws.resource_prefix, "<prefix>"), (env.aws.account_id, "<account>")]
    if env.catalog.database_prefix:
        tokens.append((env.catalog.database_prefix, "<db_prefix>"))
    tokens.append((env.name, "<env>"))
    return sorted(tokens, key=lambda t: -len(t[0]))  # the longest first: a prefix contains the name


def normalise(value: Any, env: Environment) -> Any:
    """``value`` with the environment's own names replaced by placeholders (whole words only)."""
    if isinstance(value, dict):
        return {k: normalise(v, env) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalise(v, env) for v in value]
    if not isinstance(value, str):
        return value
    for token, placeholder in _tokens(env):
        value = re.sub(rf"(?<![A-Za-z0-9]){re.escape(token)}(?![A-Za-z0-9])", placeholder, value)
    return value


def _show(value: Any) -> str:
    if value is _MISSING or value is None:
        return "absent"
    if isinstance(value, dict):
        return "a section" if value else "{}"
    return repr(value)


def _compare(va: Any, vb: Any, path: str, out: list[tuple[str, Any, Any]]) -> None:
    if isinstance(va, dict) and isinstance(vb, dict):
        for k in sorted(va.keys() | vb.keys()):
            if not path and k in _IGNORED:
                continue
            _compare(va.get(k, _MISSING), vb.get(k, _MISSING), f"{path}.{k}" if path else k, out)
    elif va != vb and not (va in (None, _MISSING) and vb in (None, _MISSING)):
        # A section absent on one side is one line, at the section, not one per field.
        out.append((path, va, vb))


def diff(a: Environment, b: Environment) -> list[str]:
    """One line per setting that differs in substance, sorted by path:
    ``sensors.settle_seconds: 30.0 (dev) → 5.0 (prod)``. Empty when the two declarations differ only in
    their names."""
    found: list[tuple[str, Any, Any]] = []
    _compare(normalise(a.model_dump(mode="json"), a), normalise(b.model_dump(mode="json"), b), "", found)
    return [f"{path}: {_show(va)} ({a.name}) → {_show(vb)} ({b.name})" for path, va, vb in found]
