"""One error vocabulary: everything the platform raises is a PlatformError, terminal or transient,
and the Dagster layer turns each family into the right kind of failure."""

from __future__ import annotations

import ast
import builtins
import errno
import importlib
import pkgutil
from pathlib import Path

import dagster as dg
import pytest
from support import REPO

from assets.policies import RETRY, platform_errors
from core import errors
from core.errors import (
    ConfigError,
    FileRejected,
    PlatformError,
    ResourceBusy,
    StorageFull,
    TerminalError,
    TransientError,
    from_os_error,
)

PACKAGES = ("assets", "checks", "cli", "core", "engine", "resources")
# Modules that run in an environment of their own, importing nothing of the project: the Spark job
# (its refusals and failures reach the platform as the driver's FileRejected, ContractError or
# ResourceUnavailable).
OTHER_ENVIRONMENTS = {"engine.spark.job"}
# Signals raised and caught inside one module, never seen outside it.
INTERNAL_SIGNALS = {"NeedsLineByLine", "_TooLong", "_BadContinuation"}
VALIDATORS = {"field_validator", "model_validator"}


def _modules() -> list[str]:
    out = []
    for package in PACKAGES:
        out.append(package)
        out += [m.name for m in pkgutil.walk_packages([str(REPO / package)], prefix=f"{package}.")
                if m.name not in OTHER_ENVIRONMENTS]
    return out


def _is_validator(fn: ast.AST) -> bool:
    decorators = getattr(fn, "decorator_list", [])
    names = {d.func.id if isinstance(d, ast.Call) and isinstance(d.func, ast.Name) else
             d.id if isinstance(d, ast.Name) else None for d in decorators}
    return bool(names & VALIDATORS)


def raised_names(source: str) -> list[tuple[str, int, bool]]:
    """(exception name, line, inside a pydantic validator) for every ``raise X(...)`` / ``raise X``."""
    tree = ast.parse(source)
    out: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_validator: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_validator or (isinstance(child, ast.FunctionDef) and _is_validator(child))
            if isinstance(child, ast.Raise) and child.exc is not None:
                exc = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
                if isinstance(exc, ast.Name):
                    out.append((exc.id, child.lineno, inside))
                elif isinstance(exc, ast.Attribute):
                    out.append((ast.unparse(exc), child.lineno, inside))
            visit(child, inside)

    visit(tree, False)
    return out


def _returns_platform_error(module: object, name: str) -> bool:
    """``raise translate(e, ...)`` / ``raise self._helper(...)``: a function annotated to return a
    PlatformError (checked through its annotation, resolved in its module)."""
    import inspect
    import typing

    attr = name.removeprefix("self.")
    candidates = [getattr(module, attr, None)] if attr == name else [
        getattr(c, attr, None) for c in vars(module).values() if isinstance(c, type)]
    for fn in candidates:
        if not callable(fn) or isinstance(fn, type):
            continue
        try:
            ret = typing.get_type_hints(inspect.unwrap(fn)).get("return")
        except Exception:
            continue
        if isinstance(ret, type) and issubclass(ret, PlatformError):
            return True
    return False


def test_every_error_the_platform_raises_belongs_to_the_vocabulary() -> None:
    offenders = []
    checked = 0
    for name in _modules():
        module = importlib.import_module(name)
        path = Path(module.__file__ or "")
        if path.suffix != ".py":
            continue
        for exc, line, in_validator in raised_names(path.read_text()):
            checked += 1
            if exc in ("dg.Failure", "e", "failure", "self._error") or exc in INTERNAL_SIGNALS:
                continue  # the Dagster boundary, a re-raise, an internal signal
            if _returns_platform_error(module, exc):
                continue  # a translator or a helper that builds the error (e.g. resources.aws.translate)
            cls = getattr(module, exc, None) or getattr(builtins, exc, None)
            if cls is ValueError and in_validator:
                continue  # pydantic's protocol: load_model turns it into a ConfigError naming file and line
            if isinstance(cls, type) and issubclass(cls, PlatformError):
                continue
            offenders.append(f"{path.relative_to(REPO)}:{line}: raise {exc}")
    assert checked > 50
    assert not offenders, "raise a core.errors class instead:\n" + "\n".join(offenders)


def test_the_two_families() -> None:
    for name in dir(errors):
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, PlatformError) and cls not in (PlatformError,):
            assert issubclass(cls, TerminalError) != issubclass(cls, TransientError), name
    assert ConfigError("x").kind == "terminal" and not ConfigError("x").retryable
    assert ResourceBusy("x").kind == "transient" and ResourceBusy("x").retryable
    assert isinstance(ConfigError("x"), ValueError)  # callers that catch ValueError keep working


@pytest.mark.parametrize(("error", "allow_retries", "kind"), [
    (FileRejected("a.csv", "z.d", "the file is empty (0 bytes)"), False, "terminal"),
    (ResourceBusy("the catalog is locked"), True, "transient"),
    (OSError(errno.ENOSPC, "No space left on device"), True, "transient"),
    (OSError(errno.EACCES, "Permission denied"), False, "terminal"),
])
def test_the_dagster_boundary_turns_each_family_into_its_failure(error: Exception, allow_retries: bool,
                                                                 kind: str) -> None:
    with pytest.raises(dg.Failure) as e, platform_errors("staging a.csv", source_file="a.csv"):
        raise error
    assert e.value.allow_retries is allow_retries
    assert e.value.metadata["error_kind"].value == kind
    assert e.value.metadata["source_file"].value == "a.csv"


def test_a_full_disk_says_what_was_being_written_and_that_nothing_partial_is_left() -> None:
    e = from_os_error(OSError(errno.ENOSPC, "No space left on device", "/lake/staging/_tmp/x.parquet"),
                      "staging a.csv (mobility.yellow_trips)")
    assert isinstance(e, StorageFull)
    assert str(e).startswith("staging a.csv (mobility.yellow_trips): no space left on the device "
                             "(/lake/staging/_tmp/x.parquet)")
    assert "previous version is intact" in str(e)


def test_transient_errors_are_retried_with_backoff_and_jitter() -> None:
    assert RETRY.max_retries >= 2 and RETRY.delay and RETRY.backoff == dg.Backoff.EXPONENTIAL
    assert RETRY.jitter == dg.Jitter.PLUS_MINUS
    defs = __import__("support").load_definitions_module().defs
    for asset in defs.assets:
        if isinstance(asset, dg.AssetsDefinition):
            for node in (asset.node_def,):
                assert node.retry_policy == RETRY, asset.keys
