"""TOML files: every error names the file, the line and the dotted key."""
from __future__ import annotations

from pathlib import Path

import pytest

from messages.errors import ConfigError
from host.toml_config import key_at_line, key_line, load_config, read_config

TRICKY = '''# keys that only look like keys, and keys that hide inside values
[services.asr]
kind = "echo"
notes = """
max_queue = 5
"""
quote = 'a "quoted" [bracket'
list = [
  1,  # max_queue = 6
  { max_queue = 7 },
]
max_queue = 0
inline = { a = 1, b = { c = "}" } }
'''


@pytest.mark.parametrize("key,line", [
    ("services.asr.max_queue", 12),     # not the lookalikes in the string, comment and array
    ("services.asr.inline.b.c", 13),
    ("services.asr.quote", 7),
    ("services.asr.missing", 2),        # a missing key: its table
    ("services", 2),
    ("metrics.port", None),
])
def test_key_line_skips_strings_arrays_and_comments(key, line):
    assert key_line(TRICKY, key) == line


def test_a_bad_value_is_reported_at_its_line(tmp_path: Path):
    path = tmp_path / "grym.toml"
    path.write_text('[system]\nlog_dir = """\nadmin_port = 20000\n"""\nadmin_port = 80\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}:5: system.admin_port:"), err.value
    assert err.value.details["line"] == 5


@pytest.mark.parametrize("text,line,key", [
    ("[system]\nadmin_port = 19500\nbind_address = \n", 3, "system.bind_address"),
    ("[system\nadmin_port = 1\n", 1, "system"),
    ('[services.echo]\nkind = "echo\n', 2, "services.echo.kind"),
])
def test_a_syntax_error_names_line_and_key(tmp_path: Path, text, line, key):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        read_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}:{line}: {key}: not valid TOML: "), message
    assert "(column " in message
    assert err.value.details == {"file": str(path), "line": line, "key": key}


def test_key_at_line_without_a_table():
    assert key_at_line("x = \n", 1) == "x"
    assert key_at_line("\n\n", 2) is None


def test_a_missing_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")


def test_relative_paths_are_relative_to_the_file(tmp_path: Path):
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "grym.toml"
    path.write_text('[system]\nlog_dir = "logs"\n[context]\npersistence = "sqlite"\n'
                    'path = "/abs/context.db"\n')
    raw = read_config(path)
    assert raw["system"]["log_dir"] == str(tmp_path / "etc" / "logs")
    assert raw["context"]["path"] == "/abs/context.db"
    assert load_config(path).log_dir() == tmp_path / "etc" / "logs"


def test_the_example_config_is_valid():
    example = Path(__file__).resolve().parents[2] / "examples" / "grym.toml"
    config = load_config(example)
    assert "echo" in config.services and config.metrics.enabled


def test_the_metrics_port_must_not_be_the_admin_port(tmp_path: Path):
    path = tmp_path / "grym.toml"
    path.write_text("[system]\nadmin_port = 23456\n\n[metrics]\nport = 23456\n")
    with pytest.raises(ConfigError, match=f"^{path}:5: metrics.port: must differ"):
        load_config(path)
