"""The daemon driven through its command line, as a person would."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

from messages import ErrorCode, Task
from host.launcher import project_env, runtime_processes
from host.system import ServiceSystem
from host.toml_config import load_config
from tests.conftest import free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "run.py", *args], capture_output=True, text=True,
                         timeout=90, env=project_env())
    if check:
        assert out.returncode == 0, f"run.py {' '.join(args)}: {out.stdout}{out.stderr}"
    return out


def write_config(tmp_path, echo_settings: str = "") -> tuple:
    """A config on free ports with everything under ``tmp_path``; (file, log dir, metrics port)."""
    port, metrics_port = free_port(), free_port()
    config = tmp_path / "grym.toml"
    config.write_text(f"""
[system]
admin_port = {port}
log_dir = "logs"            # relative: to this file

[services.echo]
kind = "echo"
eager = true
{echo_settings}

[context]
persistence = "sqlite"
path = "context.db"

[metrics]
port = {metrics_port}
""")
    return config, tmp_path / "logs", metrics_port


def stop_and_sweep(config, logs) -> None:
    """Whatever happened, leave nothing running (a `run.py stop` only if something is)."""
    marker = str(logs / "config.json")
    if runtime_processes(marker):
        subprocess.run([sys.executable, "run.py", "stop", "--config", str(config)],
                       capture_output=True, timeout=60, env=project_env())
    for proc in runtime_processes(marker):
        proc.kill()


@pytest.fixture
def daemon_config(tmp_path):
    config, logs, _ = write_config(tmp_path)
    yield config, logs
    stop_and_sweep(config, logs)


def test_start_status_submit_context_stop_restart(daemon_config):
    config, logs = daemon_config
    c = ("--config", str(config))
    assert "started" in cli("start", *c).stdout
    again = cli("start", *c, check=False)
    assert again.returncode == 1 and "already running" in again.stderr
    status = json.loads(cli("status", "--json", *c).stdout)
    assert status["services"][0]["state"] == "online"
    assert "echo" in cli("status", *c).stdout
    result = json.loads(cli("submit", "echo", "--data", '{"x": 1}', *c).stdout)
    assert result["status"] == "completed" and result["data"] == {"x": 1}
    bad = cli("submit", "nope", *c, check=False)
    assert bad.returncode == 3 and "INVALID_TASK_TYPE" in bad.stdout
    ack = json.loads(cli("context", "store", "--type", "prompt", "--content", '{"t": "kept"}',
                         *c).stdout)
    assert json.loads(cli("context", "get", ack["item_id"], *c).stdout)["content"] == {"t": "kept"}
    assert "grym.log" in cli("logs", *c).stdout
    marker = str(logs / "config.json")
    assert len(runtime_processes(marker)) >= 5
    assert "stopped" in cli("stop", *c).stdout
    assert runtime_processes(marker) == []
    # A new start finds the persisted context.
    cli("start", *c)
    assert json.loads(cli("context", "get", ack["item_id"], *c).stdout)["content"] == {"t": "kept"}
    cli("stop", *c)
    assert runtime_processes(marker) == []


def test_the_launcher_restarts_a_dead_supervisor(daemon_config):
    config, logs = daemon_config
    c = ("--config", str(config))
    cli("start", *c)
    ack = json.loads(cli("context", "store", "--type", "prompt", "--content", "{}", *c).stdout)
    old = json.loads(cli("status", "--json", *c).stdout)["supervisor_pid"]
    psutil.Process(old).kill()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = cli("status", "--json", *c, check=False)
        if out.returncode == 0 and json.loads(out.stdout)["supervisor_pid"] != old:
            break
        time.sleep(0.5)
    status = json.loads(cli("status", "--json", *c).stdout)
    assert status["supervisor_pid"] != old and status["services"][0]["state"] == "online"
    assert json.loads(cli("submit", "echo", "--data", "1", *c).stdout)["data"] == 1
    assert json.loads(cli("context", "get", ack["item_id"], *c).stdout)["type"] == "prompt"
    cli("stop", *c)
    assert runtime_processes(str(logs / "config.json")) == []


def test_serve_in_the_foreground_stops_on_sigterm(daemon_config):
    config, logs = daemon_config
    proc = subprocess.Popen([sys.executable, "run.py", "serve", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=project_env())
    ready = json.loads(proc.stdout.readline())
    assert ready["ready"] is True
    assert json.loads(cli("status", "--json", "--config", str(config)).stdout)["services"]
    processes = [p for p in psutil.process_iter() if p.pid != proc.pid
                 and _is_child_tree(p, ready)]
    proc.terminate()
    assert proc.wait(30) == 0
    time.sleep(0.5)
    assert not cli("status", "--config", str(config), check=False).returncode == 0
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in processes)


def _is_child_tree(proc: psutil.Process, ready: dict) -> bool:
    try:
        return any(c.laddr.port == ready["admin_port"] for c in proc.net_connections("inet")
                   if c.status == psutil.CONN_LISTEN)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def test_check_config_names_key_and_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[services.asr]\nkind = "echo"\nmax_memory = "-1GB"\n')
    out = cli("check-config", str(bad), check=False)
    assert out.returncode == 2
    assert f"{bad}:3: services.asr.max_memory" in out.stderr
    assert cli("check-config", "examples/grym.toml").returncode == 0
    scaled = tmp_path / "scaled.toml"
    scaled.write_text('[services.asr]\nkind = "echo"\nreplicas = 3\n')
    assert "services: asr (3 replicas);" in cli("check-config", str(scaled)).stdout
    scaled.write_text('[services.asr]\nkind = "echo"\nreplicas = 3\n'
                      'autoscaling = {min_replicas = 1, max_replicas = 2}\n')
    out = cli("check-config", str(scaled), check=False)
    assert out.returncode == 2 and "services.asr.replicas: must be within" in out.stderr


def test_stop_lets_accepted_tasks_finish_and_refuses_new_ones(tmp_path):
    config, logs, metrics_port = write_config(tmp_path, "delay_ms = 2500")
    c = ("--config", str(config))
    try:
        cli("start", *c)
        slow = subprocess.Popen([sys.executable, "run.py", "submit", "echo", "--data", '"slow"', *c],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=project_env())
        in_flight = 'grym_tasks_in_flight{service="echo"} 1.0'
        wait_until(lambda: in_flight in scrape(metrics_port), timeout=15, interval=0.05)
        stop = subprocess.Popen([sys.executable, "run.py", "stop", "--drain", "20", *c],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=project_env())
        wait_until(lambda: "system_stopping" in (logs / "grym.log").read_text(), timeout=15,
                   interval=0.05)
        with ServiceSystem.connect(admin_port_of(config),
                                   secret_file=logs / "secret.key") as joined:
            refused = joined.router.route_task(Task(id="late", type="echo", data=1))
        assert refused.error is not None and refused.error.code is ErrorCode.SHUTTING_DOWN
        out, err = slow.communicate(timeout=30)
        assert slow.returncode == 0, out + err
        assert json.loads(out)["data"] == "slow"
        out, err = stop.communicate(timeout=60)
        assert stop.returncode == 0 and "stopped" in out, out + err
        assert runtime_processes(str(logs / "config.json")) == []
    finally:
        stop_and_sweep(config, logs)


def scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def admin_port_of(config) -> int:
    return load_config(config).system.admin_port
