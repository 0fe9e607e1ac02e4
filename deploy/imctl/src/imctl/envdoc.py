"""deploy/.env.example, generated from the settings classes: every setting, its default, its meaning.

The meaning is the field's description, or else the comment lines right above the field in its
class (the one-line "why" every setting carries). `imctl env-example` writes the file; a test
fails when it drifts from the classes.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from pathlib import Path

from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from .servers import REPO_ROOT

ENV_EXAMPLE = REPO_ROOT / "deploy" / ".env.example"
# (section title, "module:Class"); the shared settings first, then each service's own.
SETTINGS = (
    ("Shared by every service", "im_runtime.settings:CommonSettings"),
    ("im-api", "im_api.settings:ApiSettings"),
    ("delivery (gateway and worker)", "im_delivery.settings:DeliverySettings"),
    ("presence", "im_presence.settings:PresenceSettings"),
    ("notifier", "im_notifier.settings:NotifierSettings"),
)


def _load(path: str) -> type[BaseSettings]:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def _comments(cls: type) -> dict[str, str]:
    """field name → the comment block right above its assignment in `cls`'s own source."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    out: dict[str, str] = {}
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            block, i = [], node.lineno - 2
            while i >= 0 and lines[i].strip().startswith("#"):
                text = lines[i].strip().lstrip("#").strip()
                if not text.startswith("---"):
                    block.insert(0, text)
                i -= 1
            if block:
                out[node.target.id] = " ".join(block)
    return out


def _env_names(cls: type[BaseSettings], name: str, field) -> list[str]:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(a) for a in alias.choices]
    if isinstance(alias, str):
        return [alias]
    prefix = cls.model_config.get("env_prefix", "")
    return [f"{prefix}{name}".upper()]


def _default(field) -> str:
    if field.default_factory is not None:
        return ""
    value = field.default
    if value is None:
        return ""
    if hasattr(value, "get_secret_value"):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def rows(cls: type[BaseSettings], skip: set[str]) -> list[tuple[str, str, str]]:
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if isinstance(klass, type) and issubclass(klass, BaseSettings) and klass is not BaseSettings:
            comments.update(_comments(klass))
    out = []
    for name, field in cls.model_fields.items():
        if name in skip:
            continue
        meaning = field.description or comments.get(name, "")
        if field.default_factory is not None:
            meaning = (meaning + " " if meaning else "") + "(default computed at start-up)"
        if field.is_required():
            meaning = (meaning + " " if meaning else "") + "REQUIRED"
        out.append((_env_names(cls, name, field)[0], _default(field), meaning))
    return out


def render() -> str:
    parts = [
        "# Every Helpdesk IM setting with its default and meaning: generated from the settings",
        "# classes by `imctl env-example` (a test fails when it drifts). Empty = no default.",
        "# IM_JWT_SECRET has no default anywhere: only the dev launcher (`make run`) makes one.",
        "",
    ]
    shared: set[str] = set()
    for title, path in SETTINGS:
        cls = _load(path)
        parts.append(f"# ---- {title} " + "-" * max(0, 80 - len(title) - 8))
        for env, default, meaning in rows(cls, shared):
            if meaning:
                parts += [f"# {line}" for line in textwrap.wrap(meaning, 96)]
            parts.append(f"{env}={default}")
        parts.append("")
        if not shared:
            shared = set(cls.model_fields)
    return "\n".join(parts)


def write(path: Path = ENV_EXAMPLE) -> Path:
    path.write_text(render())
    return path
