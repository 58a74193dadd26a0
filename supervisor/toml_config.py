"""Configuration files in TOML, with errors that name the file, the key and the line."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from messages.errors import ConfigError

from .config import SystemConfig

_TABLE = re.compile(r"^\s*\[+\s*([^\]]+?)\s*\]+\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_.\-\"']+)\s*=")


def read_config(path: str | Path) -> dict[str, Any]:
    """Parse ``path``; a syntax error becomes a ConfigError with its line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}", {"file": str(path)}) from None


def load_config(path: str | Path) -> SystemConfig:
    """Parse and validate; a ConfigError says ``FILE:LINE: key: problem``."""
    path = Path(path)
    data = read_config(path)
    try:
        return SystemConfig.from_dict(data)
    except ConfigError as exc:
        key = exc.details.get("key") or exc.message.split(":", 1)[0]
        line = key_line(path.read_text(encoding="utf-8"), key)
        where = f"{path}:{line}" if line else str(path)
        raise ConfigError(f"{where}: {exc.message}", {**exc.details, "file": str(path),
                                                      "line": line}) from None


def key_line(text: str, dotted_key: str) -> int | None:
    """The line that sets ``dotted_key`` (or the deepest table above it), 1-based."""
    best_line, best_depth = None, 0
    table: list[str] = []
    wanted = dotted_key.split(".")
    for number, line in enumerate(text.splitlines(), start=1):
        if m := _TABLE.match(line):
            table = _split(m.group(1))
            full = table
        elif m := _KEY.match(line):
            full = table + _split(m.group(1))
        else:
            continue
        depth = _common_prefix(full, wanted)
        if depth == len(full) and depth > best_depth:
            best_line, best_depth = number, depth
    return best_line


def _split(key: str) -> list[str]:
    return [part.strip().strip("\"'") for part in key.split(".")]


def _common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
