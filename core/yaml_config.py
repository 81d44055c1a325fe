"""Load a YAML declaration into a pydantic model, with errors that name file, line and field.

Every declaration of the platform (environments, insight zones) goes through here, so a typo
anywhere gives the same kind of message: ``platform/zones/x.yaml:12: datasets.trips.contract: ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from core.errors import ConfigError

__all__ = ["ConfigError", "Strict", "format_validation_error", "load_model"]

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """Base for declaration models: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Walk the composed YAML tree along a pydantic error location; return the 1-based line."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for key, value in node.value:
                if key.value == str(part):
                    nxt = value
                    break
            if nxt is None:
                break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "missing required key",
}


def format_validation_error(path: Path | str, root: yaml.Node | None, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        field = ".".join(str(p) for p in loc) or "<top level>"
        msg = _MESSAGES.get(e["type"], e["msg"])
        line = _line_of(root, loc)
        where = f"{path}:{line}" if line else str(path)
        lines.append(f"{where}: {field}: {msg}")
    return "\n".join(lines)


# libyaml's loader where PyYAML was built with it (the pinned wheels are): same results, much faster.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_model(
    path: Path,
    model: type[M],
    *,
    substitutions: dict[str, str] | None = None,
    defaults: dict[str, Any] | None = None,
) -> M:
    """Parse ``path`` and validate it against ``model``; raise ConfigError naming file/line/field."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    for key, value in (substitutions or {}).items():
        text = text.replace("${" + key + "}", value)
    try:
        data = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(data).__name__}")
    try:
        return model.model_validate({**(defaults or {}), **data})
    except ValidationError as e:
        # The tree with line numbers, composed only to say where an error is (parsing twice on
        # every load cost a quarter of a second each time the definitions load).
        root = yaml.compose(text, Loader=_LOADER)
        raise ConfigError(format_validation_error(path, root, e)) from None
