"""The admin port: picked free for an embedded runtime, fixed for the daemon (no actors)."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from host import cli, launcher
from messages.errors import ConfigError
from supervisor.config import SystemConfig


def test_a_port_taken_before_thespian_binds_it_is_picked_again(monkeypatch):
    picks, tried = iter([20001, 20002]), []

    def start(config, log_format, log_to_file):
        tried.append(config.system.admin_port)
        if config.system.admin_port == 20001:  # another process took it since we looked
            raise launcher.PortInUse("system.admin_port: taken", {"key": "system.admin_port"})
        return "asys", "info"

    monkeypatch.setattr(launcher, "free_admin_port", lambda address: next(picks))
    monkeypatch.setattr(launcher, "start_actor_system", start)
    config, asys, info = launcher.start_runtime(SystemConfig.from_dict({"system": {"admin_port": 0}}))
    assert tried == [20001, 20002] and (asys, info) == ("asys", "info")
    # The port it runs on, also in the raw config that the supervisor reads.
    assert config.system.admin_port == 20002 and config.raw["system"]["admin_port"] == 20002


def test_a_configured_port_is_not_replaced(monkeypatch):
    def start(config, log_format, log_to_file):
        raise launcher.PortInUse("system.admin_port: taken", {"key": "system.admin_port"})

    monkeypatch.setattr(launcher, "start_actor_system", start)
    monkeypatch.setattr(launcher, "free_admin_port", lambda address: pytest.fail("picked a port"))
    with pytest.raises(launcher.PortInUse):
        launcher.start_runtime(SystemConfig.from_dict({"system": {"admin_port": 20003}}))


def test_a_free_port_has_its_metrics_port_free_too(monkeypatch):
    first = []

    def in_use(address, port):  # the first pick's metrics port is taken
        if not first:
            first.append(port - launcher.METRICS_PORT_OFFSET)
        return port == first[0] + launcher.METRICS_PORT_OFFSET

    monkeypatch.setattr(launcher, "port_in_use", in_use)
    port = launcher.free_admin_port("127.0.0.1")
    assert port != first[0]
    config = launcher.with_admin_port(SystemConfig.from_dict({"metrics": {"enabled": True}}), port)
    assert launcher.metrics_port(config) == port + 1


def test_the_daemon_keeps_a_fixed_port(tmp_path: Path):
    args = argparse.Namespace(config=None, port=None)
    assert cli.daemon_config(args)[1].system.admin_port == cli.DEFAULT_PORT == 19500
    (tmp_path / "grym.toml").write_text("[system]\nadmin_port = 0\n")
    with pytest.raises(ConfigError, match="system.admin_port: the daemon needs a fixed port"):
        cli.daemon_config(argparse.Namespace(config=str(tmp_path / "grym.toml"), port=None))
