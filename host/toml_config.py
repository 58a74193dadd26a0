"""Configuration files in TOML, with errors that name the file, the line and the key.

    load_config("grym.toml")   # SystemConfig, or a ConfigError such as
    # grym.toml:14: services.asr.max_memory: expected a positive size such as '2GB', got '-1GB'
    # grym.toml:3: services.echo: not valid TOML: Invalid value (column 9)

A syntax error and a value the settings refuse read the same way, so a person
can jump straight to the line. Relative paths in the file (``system.log_dir``,
``system.secret_file``, ``context.path``, ``http.token_file``) are relative to the
file, not to wherever a command runs:
``start``, ``status`` and ``stop`` run from different directories must agree
on where the log directory (with the pid and marker files) is.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from messages.errors import ConfigError

from supervisor.config import SystemConfig

_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_HEADER = re.compile(r"^\s*\[\[?\s*([^\[\]=#]+?)\s*(\]|#|$)")
_KEY = re.compile(r"^\s*([A-Za-z0-9_.\-\"' ]+?)\s*=")
PATH_KEYS = (("system", "log_dir"), ("system", "secret_file"), ("context", "path"),
             ("http", "token_file"))


def read_config(path: str | Path) -> dict[str, Any]:
    """Parse ``path`` into the raw dict; a syntax error names its line and key."""
    path = Path(path)
    text = _read(path)
    return resolve_relative_paths(parse_toml(text, path), path.resolve().parent)


def load_config(path: str | Path) -> SystemConfig:
    """Parse and validate; a ConfigError says ``FILE:LINE: key: problem``."""
    path = Path(path)
    data = read_config(path)
    try:
        config = SystemConfig.from_dict(data)
        if config.metrics.port is not None and config.metrics.port == config.system.admin_port:
            raise ConfigError("metrics.port: must differ from system.admin_port",
                              {"key": "metrics.port"})
        return config
    except ConfigError as exc:
        key = str(exc.details.get("key") or exc.message.split(":", 1)[0]).strip(".")
        line = key_line(_read(path), key)
        where = f"{path}:{line}" if line else str(path)
        raise ConfigError(f"{where}: {exc.message}", {**exc.details, "file": str(path),
                                                      "line": line}) from None


def parse_toml(text: str, path: str | Path = "<config>") -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _POSITION.search(message)
        if match is None:
            raise ConfigError(f"{path}: not valid TOML: {message}", {"file": str(path)}) from None
        line, column = int(match.group(1)), int(match.group(2))
        key = key_at_line(text, line)
        raise ConfigError(
            f"{path}:{line}: {key + ': ' if key else ''}not valid TOML: "
            f"{message[:match.start()]} (column {column})",
            {"file": str(path), "line": line, "key": key}) from None


def resolve_relative_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    out = dict(raw)
    for section, key in PATH_KEYS:
        table = out.get(section)
        if isinstance(table, dict) and isinstance(table.get(key), str) and table[key]:
            value = Path(table[key]).expanduser()
            if not value.is_absolute():
                out[section] = {**table, key: str(base / value)}
    return out


def key_line(text: str, dotted_key: str) -> int | None:
    """The line that sets ``dotted_key``, else of the deepest table or key above it
    (a missing key is reported at its table), 1-based; None if nothing matches."""
    lines = key_lines(text)
    parts = tuple(p for p in dotted_key.split(".") if p) if dotted_key else ()
    while parts:
        # The key itself, else the first key below it (a table known only by its subtables).
        found = [n for path, n in lines.items() if path[:len(parts)] == parts]
        if found:
            return min(found)
        parts = parts[:-1]
    return None


def key_at_line(text: str, line: int) -> str | None:
    """Best guess at the dotted key of a line that may not parse: its table, plus
    the key at the start of the line if there is one."""
    table: list[str] = []
    for number, content in enumerate(text.splitlines()[:line], start=1):
        header = _HEADER.match(content)
        if header:
            table = _split(header.group(1))
        if number == line:
            key = _KEY.match(content)
            if key and not header:
                return ".".join(table + _split(key.group(1)))
    return ".".join(table) or None


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Every table and key of a valid document -> the line it is first set on."""
    scanner = _KeyScanner(text)
    try:
        scanner.document()
    except (IndexError, ValueError):
        pass  # for error messages only: keep what was found
    return scanner.lines


def _split(key: str) -> list[str]:
    return [part.strip().strip("\"'") for part in key.split(".")]


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: cannot read the config file: no such file",
                          {"file": str(path)}) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}", {"file": str(path)}) \
            from None


class _KeyScanner:
    """Walks a TOML document that tomllib has accepted and records where keys are.

    A line-by-line regex would take ``key = 1`` inside a multi-line string or
    array for a key, and miss keys inside inline tables; this walks strings,
    arrays and inline tables properly, and trusts the grammar for the rest.
    """

    _BARE = re.compile(r"[A-Za-z0-9_\-]+")
    _SCALAR = re.compile(r"[^,\]\}\n#]*")

    def __init__(self, text: str):
        self.text, self.i, self.line = text, 0, 1
        self.lines: dict[tuple[str, ...], int] = {}

    def document(self) -> None:
        table: tuple[str, ...] = ()
        while True:
            self._skip(newlines=True)
            if self.i >= len(self.text):
                return
            if self.text.startswith("[", self.i):
                width = 2 if self.text.startswith("[[", self.i) else 1
                self._advance(width)
                table = self._key()
                self._record(table)
                self._skip(newlines=False)
                self._advance(width)
            else:
                self._pair(table)

    def _record(self, path: tuple[str, ...]) -> None:
        # Errors name keys as dotted text, so a quoted "a.b" is looked up as a, b.
        self.lines.setdefault(tuple(".".join(path).split(".")), self.line)

    def _advance(self, n: int) -> None:
        self.line += self.text.count("\n", self.i, self.i + n)
        self.i += n

    def _skip(self, newlines: bool) -> None:
        while self.i < len(self.text):
            ch = self.text[self.i]
            if ch in " \t\r" or (newlines and ch == "\n"):
                self._advance(1)
            elif ch == "#":
                end = self.text.find("\n", self.i)
                self._advance((len(self.text) if end < 0 else end) - self.i)
            else:
                return

    def _pair(self, base: tuple[str, ...]) -> None:
        path = base + self._key()
        self._record(path)
        self._skip(newlines=False)
        self._advance(1)  # '='
        self._skip(newlines=False)
        self._value(path)

    def _key(self) -> tuple[str, ...]:
        parts = []
        while True:
            self._skip(newlines=False)
            if self.text[self.i] in "\"'":
                parts.append(self._string())
            else:
                match = self._BARE.match(self.text, self.i)
                if match is None:
                    raise ValueError(f"no key at line {self.line}")
                parts.append(match.group())
                self._advance(match.end() - self.i)
            self._skip(newlines=False)
            if not self.text.startswith(".", self.i):
                return tuple(parts)
            self._advance(1)

    def _string(self) -> str:
        for quote in ('"""', "'''"):
            if self.text.startswith(quote, self.i):
                end = self.text.index(quote, self.i + 3)
                while quote[0] == '"' and self._escaped(end):
                    end = self.text.index(quote, end + 1)
                while self.text.startswith(quote[0], end + 3):  # up to two quotes end the body
                    end += 1
                body = self.text[self.i + 3:end]
                self._advance(end + 3 - self.i)
                return body
        quote, j = self.text[self.i], self.i + 1
        while self.text[j] != quote:
            j += 2 if quote == '"' and self.text[j] == "\\" else 1
        body = self.text[self.i + 1:j]
        self._advance(j + 1 - self.i)
        return body

    def _escaped(self, at: int) -> bool:
        backslashes = 0
        while self.text[at - 1 - backslashes] == "\\":
            backslashes += 1
        return backslashes % 2 == 1

    def _value(self, path: tuple[str, ...]) -> None:
        ch = self.text[self.i]
        if ch in "\"'":
            self._string()
        elif ch in "{[":
            close = "}" if ch == "{" else "]"
            self._advance(1)
            while True:
                self._skip(newlines=ch == "[")  # inline tables stay on one line
                if self.text.startswith(close, self.i):
                    self._advance(1)
                    return
                if self.text.startswith(",", self.i):
                    self._advance(1)
                elif ch == "{":
                    self._pair(path)
                else:
                    self._value(path)
        else:
            match = self._SCALAR.match(self.text, self.i)
            self._advance(match.end() - self.i)
