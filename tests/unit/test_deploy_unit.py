"""deploy/grym.service: its hardening, the log directory systemd gives it, and
`systemd-analyze verify` where the tool exists (Debian's systemd package)."""
from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.config import SystemConfig

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "grym.service"
INSTALLED = "/opt/grym"  # where the unit expects the project


def service_section() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # keys are case sensitive
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def test_the_unit_runs_as_nobody_in_a_read_only_system_with_a_watchdog():
    service = service_section()
    expected = {"DynamicUser": "yes", "ProtectSystem": "strict", "NoNewPrivileges": "yes",
                "PrivateTmp": "yes", "StateDirectory": "grym", "LogsDirectory": "grym",
                "CacheDirectory": "grym", "Type": "notify", "NotifyAccess": "main"}
    assert {key: service.get(key) for key in expected} == expected
    assert "User" not in service  # a fixed user would defeat DynamicUser
    assert 0 < int(service["WatchdogSec"]) <= 60
    assert service["ExecStart"].startswith(f"{INSTALLED}/.venv/bin/python run.py serve ")


def test_log_dir_is_the_one_systemd_made_unless_the_config_names_one(monkeypatch):
    monkeypatch.setenv("LOGS_DIRECTORY", "/var/log/grym")
    assert SystemConfig.from_dict({}).log_dir() == Path("/var/log/grym")
    named = SystemConfig.from_dict({"system": {"log_dir": "/srv/grym-logs"}})
    assert named.log_dir() == Path("/srv/grym-logs")
    monkeypatch.delenv("LOGS_DIRECTORY")
    assert SystemConfig.from_dict({}).log_dir().name == "grym-19500"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (Debian: apt-get install systemd)")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    # verify insists that ExecStart's program exists: point the unit at this checkout
    # (its interpreter, its folder) instead of /opt/grym; every other line is as shipped.
    text = UNIT.read_text()
    assert f"{INSTALLED}/.venv/bin/python" in text
    unit = tmp_path / "grym.service"
    unit.write_text(text.replace(f"{INSTALLED}/.venv/bin/python", sys.executable)
                    .replace(INSTALLED, str(ROOT)))
    out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                         text=True, timeout=60)
    # It exits 0 on unknown keys and bad values too, and only says so on stderr.
    assert (out.returncode, out.stderr) == (0, "")
