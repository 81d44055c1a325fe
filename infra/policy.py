"""A small IAM policy evaluator: a test aid for reviewing the generated policies (the tests, and
``python -m cli infra check``), not a reimplementation of IAM.

What it does, for one request (action, resource, principal, condition context) against identity
policies and resource policies (e.g. a bucket policy) of the same account:

- an explicit ``Deny`` in any policy wins; else an ``Allow`` in any policy allows; else the default deny;
- ``Action`` / ``NotAction`` match case-insensitively with ``*`` and ``?`` wildcards; ``Resource`` /
  ``NotResource`` case-sensitively with the same wildcards;
- a resource policy's ``Principal`` is ``"*"`` or ``{"AWS": arn | [arns]}`` (``arn:aws:iam::<acct>:root``
  stands for every principal of that account), ``{"Service": ...}`` matches a service principal;
- conditions: ``StringEquals``, ``StringNotEquals``, ``StringLike``, ``StringNotLike``, ``Bool``, ``Null``, and
  the ``...IfExists`` forms. Keys are case-insensitive. Several values of one key: any matches (for a
  negated operator: none matches); several keys or operators: all must hold. A key absent from the
  context makes a positive operator false and a negated one true (as IAM does).

Limits (anything else raises ``ConfigError``, nothing is silently ignored): no ``NotPrincipal``, no
policy variables (``${aws:username}``), no ``ForAnyValue``/``ForAllValues``, no numeric, date, IP or ARN
operators, no permission boundaries, SCPs, session policies, KMS grants or cross-account rules, and no
knowledge of which condition keys AWS actually sends with a request: the caller states the context.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from core.errors import ConfigError

__all__ = ["Decision", "Request", "evaluate", "matches"]

_OPERATORS = {"StringEquals", "StringNotEquals", "StringLike", "StringNotLike", "Bool", "Null"}
_SUPPORTED_ELEMENTS = {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Principal", "Condition"}


@dataclass(frozen=True)
class Request:
    action: str  # e.g. s3:GetObject
    resource: str  # e.g. arn:aws:s3:::bucket/key
    principal: str = ""  # the caller's ARN, matched against resource policies' Principal
    context: Mapping[str, Any] = field(default_factory=dict)  # condition keys → value (str, bool, list)


@dataclass(frozen=True)
class Decision:
    effect: Literal["Allow", "Deny", "ImplicitDeny"]
    reason: str  # which statement decided (policy name and Sid), or "no statement allows"

    @property
    def allowed(self) -> bool:
        return self.effect == "Allow"


def matches(pattern: str, value: str, *, case_sensitive: bool = True) -> bool:
    """IAM's wildcards: ``*`` any run of characters (``/`` included), ``?`` one character."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case_sensitive else re.IGNORECASE) is not None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _principal_matches(principal: Any, caller: str) -> bool:
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        raise ConfigError(f"policy: unsupported Principal {principal!r}")
    for kind, values in principal.items():
        for v in _list(values):
            if v == "*" or v == caller:
                return True
            # The account principal stands for every principal of that account.
            if kind == "AWS" and (m := re.fullmatch(r"arn:aws[a-z-]*:iam::(\d{12}):root", v)) and \
                    re.match(rf"arn:aws[a-z-]*:(iam|sts)::{m.group(1)}:", caller):
                return True
    return False


def _condition_holds(condition: Mapping[str, Mapping[str, Any]], context: Mapping[str, Any], where: str) -> bool:
    ctx = {k.lower(): v for k, v in context.items()}
    for operator, keys in condition.items():
        base = operator.removesuffix("IfExists")
        if base not in _OPERATORS or (base == "Null" and operator != base):
            raise ConfigError(f"policy {where}: condition operator {operator!r} is not supported by infra.policy")
        for key, expected in keys.items():
            present = key.lower() in ctx
            expected = [str(e) for e in _list(expected)]
            if base == "Null":
                if (not present) != (expected[0].lower() == "true"):
                    return False
                continue
            if not present:
                if operator.endswith("IfExists") or "Not" in base:
                    continue
                return False
            actual = [str(a) for a in _list(ctx[key.lower()])]
            if base == "Bool":
                hit = any(a.lower() == e.lower() for a in actual for e in expected)
            elif base in ("StringLike", "StringNotLike"):
                hit = any(matches(e, a) for a in actual for e in expected)
            else:
                hit = any(a == e for a in actual for e in expected)
            if hit == ("Not" in base):
                return False
    return True


def _statement_applies(st: Mapping[str, Any], request: Request, where: str, resource_policy: bool) -> bool:
    unknown = set(st) - _SUPPORTED_ELEMENTS
    if unknown:
        raise ConfigError(f"policy {where}: unsupported element(s) {', '.join(sorted(unknown))}")
    if "Action" in st:
        if not any(matches(a, request.action, case_sensitive=False) for a in _list(st["Action"])):
            return False
    elif any(matches(a, request.action, case_sensitive=False) for a in _list(st.get("NotAction", []))):
        return False
    if "Resource" in st:
        if not any(matches(r, request.resource) for r in _list(st["Resource"])):
            return False
    elif "NotResource" in st:
        if any(matches(r, request.resource) for r in _list(st["NotResource"])):
            return False
    elif not resource_policy:
        raise ConfigError(f"policy {where}: a statement without Resource")
    if resource_policy and not _principal_matches(st.get("Principal"), request.principal):
        return False
    return _condition_holds(st.get("Condition", {}), request.context, where)


def evaluate(request: Request, identity: Iterable[tuple[str, Mapping[str, Any]]] = (),
             resource: Iterable[tuple[str, Mapping[str, Any]]] = ()) -> Decision:
    """Decide ``request`` against named identity policies and resource policies, each as
    ``(name, policy document)``."""
    allow: str | None = None
    for policies, is_resource in ((identity, False), (resource, True)):
        for name, doc in policies:
            for i, st in enumerate(_list(doc.get("Statement", []))):
                where = f"{name}#{st.get('Sid', i)}"
                if not _statement_applies(st, request, where, is_resource):
                    continue
                if st.get("Effect") == "Deny":
                    return Decision("Deny", f"explicit deny by {where}")
                if st.get("Effect") != "Allow":
                    raise ConfigError(f"policy {where}: Effect must be Allow or Deny")
                allow = allow or where
    return Decision("Allow", f"allowed by {allow}") if allow else Decision("ImplicitDeny", "no statement allows")
