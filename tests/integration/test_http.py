"""The daemon's HTTP face, driven with a real HTTP client against a daemon started by run.py."""
from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import psutil
import pytest
import soundfile

from host.launcher import alive, end_processes, project_env, runtime_processes
from services.wav2vec2.checkpoint import make_checkpoint
from tests.conftest import free_port, wait_until

from .headless import CHROMIUM, Browser

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
TOKEN = "http-test-token-0123456789abcdef"
SLOW_MS = 1500


@dataclass
class Daemon:
    config: Path
    logs: Path
    url: str
    started: str  # what `run.py start` printed

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run([sys.executable, "run.py", *args, "--config", str(self.config)],
                             capture_output=True, text=True, timeout=120, env=project_env())
        if check:
            assert out.returncode == 0, f"run.py {' '.join(args)}: {out.stdout}{out.stderr}"
        return out

    def launcher_pid(self) -> int:
        return int((self.logs / "grym.pid").read_text())

    def stop(self) -> None:
        """Whatever happened, leave nothing running: SIGTERM, as systemd stops it
        (`run.py stop` is tested in test_daemon_cli), then kill -9 of what is left."""
        processes = runtime_processes(str(self.logs / "config.json"))  # launcher, admin, actors
        pid_file = self.logs / "grym.pid"
        launcher = [p for p in processes
                    if pid_file.exists() and p.pid == int(pid_file.read_text())]
        for proc in launcher:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        end_processes(processes, timeout_s=60 if launcher else 0)


def start_daemon(tmp_path: Path, services: str, http: str = "") -> Daemon:
    """``run.py start`` on a config of these services (and ``[http]`` keys)."""
    port, metrics_port, http_port = free_port(), free_port(), free_port()
    config = tmp_path / "grym.toml"
    config.write_text(f"""
[system]
admin_port = {port}
log_dir = "logs"

{services}

[context]
persistence = "memory"

[metrics]
port = {metrics_port}

[http]
port = {http_port}
max_body_bytes = "1MB"
{http}
""")
    daemon = Daemon(config, tmp_path / "logs", f"http://127.0.0.1:{http_port}", "")
    daemon.started = daemon.run("start").stdout
    return daemon


def echo_services(slow_ms: int) -> str:
    return """
[services.echo]
kind = "echo"
eager = true
max_queue = 256

[services.slow]
kind = "echo"
eager = true
delay_ms = %d
max_queue = 1

[routes]
echo = "echo"
slow = "slow"
""" % slow_ms


@pytest.fixture(scope="module")
def daemon(tmp_path_factory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("http")
    model = make_checkpoint(tmp / "tiny", "tiny")
    services = echo_services(SLOW_MS) + f"""
victim = "victim"
broken = "broken"

[services.victim]              # crashed on purpose, for health events
kind = "echo"
eager = true

[services.broken]              # lazy; its model never loads
kind = "echo"
fail_init = true
max_restarts = 0

[services.wav2vec2]
kind = "wav2vec2"
model = "{model}"
local_files_only = true
torch_threads = 1
eager = true
"""
    daemon = start_daemon(tmp, services)
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def client(daemon) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=daemon.url, timeout=30) as c:
        yield c


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body["error"]) == {"code", "message", "details"}, body
    return body["error"]


# -- the daemon names its address ----------------------------------------------------------------
def test_start_and_status_name_the_http_address(daemon):
    assert f"{daemon.url}/" in daemon.started
    assert f"HTTP API and status page: {daemon.url}/" in daemon.run("status").stdout
    assert json.loads(daemon.run("status", "--json").stdout)["http"] == f"{daemon.url}/"
    checked = subprocess.run([sys.executable, "run.py", "check-config", str(daemon.config)],
                             capture_output=True, text=True, timeout=60, env=project_env())
    assert f"HTTP {daemon.url}/" in checked.stdout, checked.stdout + checked.stderr


# -- health ---------------------------------------------------------------------------------------
def test_liveness_readiness_and_model_readiness(client):
    for path in ("/livez", "/v2/health/live"):
        assert client.get(path).json() == {"live": True}
    for path in ("/readyz", "/v2/health/ready"):
        assert client.get(path).json() == {"ready": True}
    assert client.get("/v2/models/echo/ready").json() == {"name": "echo", "ready": True}
    lazy = client.get("/v2/models/broken/ready")  # lazy: not loaded, so not ready
    assert lazy.status_code == 503 and error_of(lazy)["details"]["service"] == "broken"
    missing = client.get("/v2/models/nope/ready")
    assert missing.status_code == 404 and error_of(missing)["code"] == "SERVICE_NOT_FOUND"


# -- tasks and every error status -------------------------------------------------------------------
def test_json_tasks_through_the_routes_and_on_a_named_service(client):
    done = client.post("/v1/tasks/echo", json={"data": {"x": [1, 2]}, "priority": 8,
                                                "id": "http-1", "metadata": {"who": "test"}})
    assert done.status_code == 200
    body = done.json()
    assert body["task_id"] == "http-1" and body["status"] == "completed"
    assert body["data"] == {"x": [1, 2]} and body["metrics"]["total_ms"] > 0
    named = client.post("/v1/services/echo/tasks", json={"type": "anything", "data": "hi"})
    assert named.status_code == 200 and named.json()["data"] == "hi"


def test_bad_requests_are_400_or_422_with_the_field_named(client):
    cases = [
        (client.post("/v1/tasks/nope", json={}), 400, "INVALID_TASK_TYPE", None),
        (client.post("/v1/tasks/echo", content=b'{"data": ',
                     headers={"content-type": "application/json"}), 400, "INVALID_INPUT", None),
        (client.post("/v1/tasks/echo", json={"priority": "high"}), 422, "INVALID_INPUT",
         "priority"),
        (client.post("/v1/tasks/echo", json={"data": 1, "colour": "red"}), 422, "INVALID_INPUT",
         "colour"),
        (client.post("/v1/tasks/echo?colour=red", json={}), 422, "INVALID_INPUT", "colour"),
        (client.post("/v1/tasks/echo?arrays=hex", json={}), 422, "INVALID_INPUT", "arrays"),
        (client.post("/v1/services/echo/tasks", json={"data": 1}), 422, "INVALID_INPUT", "type"),
        (client.post("/v1/context", json={"type": "prompt"}), 422, "INVALID_INPUT", "content"),
        (client.post("/v1/context", json={"type": "p", "content": 1, "priority": 11}), 400,
         "INVALID_INPUT", "priority"),
        (client.get("/v1/context?limit=0"), 422, "INVALID_INPUT", "limit"),
        (client.get("/v1/context?flavour=x"), 422, "INVALID_INPUT", "flavour"),
    ]
    for response, status, code, field in cases:
        assert response.status_code == status, (response.request.url, response.text)
        error = error_of(response)
        assert error["code"] == code, response.text
        if field:
            assert field in error["message"], response.text
    wrong_media = client.post("/v1/tasks/echo", content=b"hi", headers={"content-type": "text/plain"})
    assert wrong_media.status_code == 415
    assert error_of(client.get("/v1/tasks/echo"))["code"] == "METHOD_NOT_ALLOWED"
    assert client.get("/v1/nothing-here").status_code == 404


def test_a_body_over_the_limit_is_413_before_it_is_read(client):
    big = b"x" * (1_000_001)
    declared = client.post("/v1/tasks/echo", content=big, headers={"content-type": "audio/wav"})
    assert declared.status_code == 413 and error_of(declared)["code"] == "PAYLOAD_TOO_LARGE"
    chunks = iter([b"x" * 600_000, b"x" * 600_000])
    streamed = client.post("/v1/tasks/echo", content=chunks, headers={"content-type": "audio/wav"})
    assert streamed.status_code == 413
    assert client.get("/livez").status_code == 200


def test_unknown_service_timeout_overload_and_unavailable(client, daemon):
    for response in (client.post("/v1/services/nope/tasks", json={"type": "echo"}),
                     client.get("/v1/services/nope")):
        assert response.status_code == 404 and error_of(response)["code"] == "SERVICE_NOT_FOUND"
    # OVERLOADED: the slow service takes one task at a time.
    first: dict[str, httpx.Response] = {}
    runner = threading.Thread(target=lambda: first.setdefault(
        "r", httpx.post(f"{daemon.url}/v1/tasks/slow", json={"data": 1}, timeout=30)))
    runner.start()
    wait_until(lambda: client.get("/v1/services/slow").json()["queue_depth"] >= 1, timeout=10)
    refused = client.post("/v1/tasks/slow", json={"data": 2})
    runner.join(30)
    assert refused.status_code == 429, refused.text
    assert error_of(refused)["code"] == "OVERLOADED" and refused.headers["retry-after"] == "1"
    assert first["r"].status_code == 200
    # TIMEOUT: the task's own deadline is shorter than the service takes.
    late = client.post("/v1/tasks/slow", json={"data": 3, "timeout_s": 0.2})
    assert late.status_code == 504 and error_of(late)["code"] == "TIMEOUT"
    assert late.json()["task_id"] and late.json()["status"] == "failed"
    # SERVICE_UNAVAILABLE: a service whose model never loads, once it has failed.
    client.post("/v1/tasks/broken", json={})
    unavailable = wait_until(lambda: (lambda r: r if r.status_code == 503 and error_of(r)["code"]
                                      == "SERVICE_UNAVAILABLE" else None)(
        client.post("/v1/tasks/broken", json={})), timeout=20, interval=0.2)
    assert "broken" in error_of(unavailable)["message"]
    assert client.get("/v1/services/broken").json()["state"] == "failed"


def test_two_hundred_requests_from_sixteen_threads_are_all_answered(daemon):
    statuses: list[int] = []
    lock = threading.Lock()

    def caller(n: int) -> None:
        with httpx.Client(base_url=daemon.url, timeout=60) as c:
            for i in range(n):
                r = c.post("/v1/tasks/echo", json={"data": i})
                with lock:
                    statuses.append(r.status_code if r.json().get("data") == i else -1)

    threads = [threading.Thread(target=caller, args=(13 if k < 8 else 12,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(statuses) == 200 and set(statuses) == {200}


# -- audio ---------------------------------------------------------------------------------------------
def audio_file(fmt: str, seconds: float = 1.0, rate: int = 16000, channels: int = 1) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    samples = np.stack([tone] * channels, axis=1) if channels > 1 else tone
    out = io.BytesIO()
    soundfile.write(out, samples, rate, format=fmt, subtype="PCM_16")
    return out.getvalue()


def test_wav_flac_and_raw_pcm_bodies(client):
    for fmt, media in (("WAV", "audio/wav"), ("FLAC", "audio/flac")):
        body = audio_file(fmt, rate=22050)
        r = client.post("/v1/tasks/speech-to-text?priority=7", content=body,
                        headers={"content-type": media})
        assert r.status_code == 200, r.text
        assert isinstance(r.json()["data"]["text"], str)
        assert r.json()["data"]["duration_s"] == pytest.approx(1.0)
    pcm = (0.1 * np.random.default_rng(0).standard_normal(8000)).astype("<f4")
    r = client.post("/v1/tasks/audio-feature-extraction?sample_rate=8000&dtype=float32"
                    "&arrays=base64", content=pcm.tobytes(),
                    headers={"content-type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    embedding = r.json()["data"]["embedding"]
    assert embedding["dtype"] == "float32" and len(embedding["shape"]) >= 1
    listed = client.post("/v1/tasks/audio-feature-extraction?sample_rate=8000&dtype=float32",
                         content=pcm.tobytes(), headers={"content-type": "audio/pcm"})
    assert isinstance(listed.json()["data"]["embedding"], list)
    assert np.allclose(np.asarray(listed.json()["data"]["embedding"]).ravel(),
                       np.frombuffer(__import__("base64").b64decode(embedding["base64"]), "<f4"),
                       atol=1e-5)


def test_audio_the_service_refuses_names_the_problem(client):
    stereo = audio_file("WAV", channels=2)
    refused = client.post("/v1/tasks/speech-to-text", content=stereo,
                          headers={"content-type": "audio/wav"})
    assert refused.status_code == 400 and error_of(refused)["code"] == "INVALID_INPUT"
    assert "downmix" in error_of(refused)["message"]
    mixed = client.post("/v1/tasks/speech-to-text?downmix=true", content=stereo,
                        headers={"content-type": "audio/wav"})
    assert mixed.status_code == 200, mixed.text
    typo = client.post("/v1/tasks/speech-to-text?downmx=true", content=stereo,
                       headers={"content-type": "audio/wav"})
    assert typo.status_code == 400 and "downmx" in error_of(typo)["message"]
    no_rate = client.post("/v1/tasks/speech-to-text?dtype=float32", content=b"\0" * 64,
                          headers={"content-type": "application/octet-stream"})
    assert no_rate.status_code == 422 and error_of(no_rate)["details"]["field"] == "sample_rate"
    garbage = client.post("/v1/tasks/speech-to-text", content=b"not audio at all",
                          headers={"content-type": "audio/flac"})
    assert garbage.status_code == 400


# -- context -------------------------------------------------------------------------------------------
def test_context_write_patch_conflict_round_trip(client):
    created = client.post("/v1/context", json={"type": "prompt", "content": {"text": "hi",
                          "lang": "en"}, "tags": ["a", "b"], "priority": "high"})
    assert created.status_code == 201, created.text
    item_id, version = created.json()["item_id"], created.json()["version"]
    assert created.headers["location"] == f"/v1/context/{item_id}"
    assert created.headers["etag"] == f'"{version}"'
    got = client.get(f"/v1/context/{item_id}")
    assert got.json()["content"] == {"text": "hi", "lang": "en"} and got.json()["priority"] == 8
    assert got.headers["etag"] == f'"{version}"'
    merge = {"content-type": "application/merge-patch+json"}
    patched = client.patch(f"/v1/context/{item_id}", content=json.dumps(
        {"content": {"lang": None, "text": "hello"}, "tags": ["c"]}),
        headers={**merge, "if-match": f'"{version}"'})
    assert patched.status_code == 200, patched.text
    new_version = patched.json()["version"]
    assert new_version > version and patched.headers["etag"] == f'"{new_version}"'
    after = client.get(f"/v1/context/{item_id}").json()
    assert after["content"] == {"text": "hello"} and after["tags"] == ["c"]
    stale = client.patch(f"/v1/context/{item_id}", content=json.dumps({"content": {"x": 1}}),
                         headers={**merge, "if-match": f'"{version}"'})
    assert stale.status_code == 412 and error_of(stale)["code"] == "CONFLICT"
    conflict = client.patch(f"/v1/context/{item_id}?expected_version={version}",
                            content=json.dumps({"content": {"x": 1}}), headers=merge)
    assert conflict.status_code == 409 and error_of(conflict)["code"] == "CONFLICT"
    assert client.get(f"/v1/context/{item_id}").json()["content"] == {"text": "hello"}
    not_updatable = client.patch(f"/v1/context/{item_id}", content=json.dumps({"version": 1}),
                                 headers=merge)
    assert not_updatable.status_code == 422 and "version" in error_of(not_updatable)["message"]
    found = client.get("/v1/context", params={"type": "prompt", "tag": "c"}).json()
    assert found["total"] == 1 and found["items"][0]["id"] == item_id
    assert client.get("/v1/context", params={"tag": "a"}).json()["total"] == 0
    assert client.get("/v1/context/stats").json()["items"] >= 1
    deleted = client.delete(f"/v1/context/{item_id}")
    assert deleted.status_code == 200 and deleted.json()["item_id"] == item_id
    for gone in (client.get(f"/v1/context/{item_id}"), client.delete(f"/v1/context/{item_id}")):
        assert gone.status_code == 404 and error_of(gone)["code"] == "NOT_FOUND"


# -- services and events -----------------------------------------------------------------------------------
def test_services_with_their_figures(client):
    client.post("/v1/tasks/echo", json={"data": 1})
    services = {s["name"]: s for s in client.get("/v1/services").json()["services"]}
    assert {"echo", "slow", "victim", "broken", "wav2vec2"} <= set(services)
    echo = services["echo"]
    assert echo["state"] == "online" and echo["requests"] >= 1 and echo["p50_ms"] > 0
    assert sum(echo["latency_histogram"]["counts"]) >= 1
    assert echo["latency_histogram"]["le_ms"][-1] is None  # +Inf
    one = client.get("/v1/services/echo").json()
    assert one["name"] == "echo" and set(one) == set(echo)


class Events:
    """An open event stream, read one parsed event at a time."""

    def __init__(self, response: httpx.Response):
        assert response.headers["content-type"].startswith("text/event-stream")
        self._lines = response.iter_lines()

    def read(self, until, limit: int = 200, within_s: float = 30.0) -> list[dict[str, Any]]:
        """Events until ``until(events)`` holds; fails after ``within_s`` (keep-alive
        comments would otherwise keep a read that never gets there going)."""
        events: list[dict[str, Any]] = []
        current: dict[str, Any] = {}
        deadline = time.monotonic() + within_s
        for line in self._lines:
            assert time.monotonic() < deadline, f"not there after {within_s} s: {events}"
            if line == "":
                if "event" in current:
                    current["data"] = json.loads(current.get("data", "null"))
                    events.append(current)
                    if until(events) or len(events) >= limit:
                        return events
                current = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                current[key] = value
        return events

    def closed(self) -> bool:
        """Whether the server ends the stream now (EOF; a read timeout says it did not)."""
        try:
            return not any(line for line in self._lines)
        except httpx.ReadTimeout:
            return False


def test_event_stream_resumes_from_last_event_id(client, daemon):
    stream_timeout = httpx.Timeout(30, read=15)
    with client.stream("GET", "/v1/events?type=sse-test", timeout=stream_timeout) as r:
        stream = Events(r)
        start = stream.read(lambda ev: True)  # subscribed from here on
        first = client.post("/v1/context", json={"type": "sse-test", "content": 1}).json()
        client.post("/v1/context", json={"type": "other", "content": 0})  # filtered out
        second = client.post("/v1/context", json={"type": "sse-test", "content": 2}).json()
        events = stream.read(lambda ev: sum(e["event"] == "context" for e in ev) >= 2)
    assert start[0]["event"] == "start"
    changes = [e for e in events if e["event"] == "context"]
    assert [c["data"]["item"]["id"] for c in changes] == [first["item_id"], second["item_id"]]
    assert changes[0]["data"]["kind"] == "stored"
    last_id = changes[-1]["id"]
    assert last_id.endswith(f":{second['seq']}")
    # Missed while disconnected, then resumed: only what came after the last id.
    third = client.post("/v1/context", json={"type": "sse-test", "content": 3}).json()
    client.delete(f"/v1/context/{first['item_id']}")
    with client.stream("GET", "/v1/events?type=sse-test", timeout=stream_timeout,
                       headers={"Last-Event-ID": last_id}) as r:
        resumed = Events(r).read(lambda ev: sum(e["event"] == "context" for e in ev) >= 2)
    replayed = [(e["data"]["kind"], e["data"]["item"]["id"]) for e in resumed
                if e["event"] == "context"]
    assert replayed == [("stored", third["item_id"]), ("deleted", first["item_id"])]


def test_health_events_stream_and_resume(client):
    stream_timeout = httpx.Timeout(30, read=20)
    with client.stream("GET", "/v1/events", timeout=stream_timeout) as r:
        stream = Events(r)
        start = stream.read(lambda ev: True)[0]
        assert start["event"] == "start"
        crashed = client.post("/v1/services/victim/tasks",
                              json={"type": "echo", "metadata": {"inject": "crash"}})
        assert crashed.status_code >= 500
        live = stream.read(lambda ev: any(e["data"]["service"] == "victim"
                                             and e["data"]["kind"] == "service_restarted"
                                             for e in ev))
    assert all(e["event"] == "health" for e in live)
    assert [int(e["id"]) for e in live] == sorted(int(e["id"]) for e in live)
    wait_until(lambda: client.get("/v1/services/victim").json()["state"] == "online", 20)
    # Resume from the start: every event since is replayed from the supervisor's log.
    with client.stream("GET", "/v1/events", timeout=stream_timeout,
                       headers={"Last-Event-ID": start["id"]}) as r:
        replay = Events(r).read(lambda ev: len([e for e in ev if e["event"] == "health"])
                             >= len(live))
    assert [e["id"] for e in replay if e["event"] == "health"][:len(live)] == \
        [e["id"] for e in live]
    recent = client.get("/v1/health/events", params={"since": int(start["id"])}).json()
    assert {e["seq"] for e in recent["events"]} >= {int(e["id"]) for e in live}
    assert recent["statuses"]["victim"] == "online"


# -- the schema, the docs page and the status page --------------------------------------------------------
def test_openapi_schema_and_offline_pages(client):
    spec = client.get("/openapi.json").json()
    for path in ("/v1/tasks/{task_type}", "/v1/services/{name}/tasks", "/v1/services",
                 "/v1/services/{name}", "/v1/health/events", "/v1/context", "/v1/context/stats",
                 "/v1/context/{item_id}", "/v1/events", "/livez", "/readyz", "/v2/health/live",
                 "/v2/health/ready", "/v2/models/{name}/ready"):
        assert path in spec["paths"], path
    for page in ("/", "/docs"):
        html = client.get(page)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert "://" not in html.text, f"{page} must fetch nothing from elsewhere"


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium package at "
                    "/usr/bin/chromium (apt-get install chromium)")
def test_status_page_in_a_real_browser_names_every_service(client, daemon, tmp_path):
    expected = {s["name"] for s in client.get("/v1/services").json()["services"]}
    client.post("/v1/context", json={"type": "page", "content": {}})
    with Browser() as browser:
        tab = browser.open(f"{daemon.url}/")
        names = browser.wait_for(tab, "Array.from(document.querySelectorAll("
                                 "'#services tr[data-service]')).map(r => r.dataset.service)", 20)
        assert set(names) == expected
        browser.wait_for(tab, "document.getElementById('live').textContent === 'live'", 20)
        text = browser.evaluate(tab, "document.body.innerText")
        for name in expected:
            assert name in text
        assert "online" in text and "items" in text
        png = browser.screenshot(tab)
        docs = browser.open(f"{daemon.url}/docs")
        assert "/v1/tasks/{task_type}" in browser.wait_for(
            docs, "document.getElementById('paths').innerText", 20)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "status-page.png").write_bytes(png)


# -- the token rule, a runtime restart and a stop ----------------------------------------------------------
def test_a_non_loopback_address_needs_a_token(tmp_path):
    config = tmp_path / "open.toml"
    config.write_text('[system]\nadmin_port = %d\n[services.echo]\nkind = "echo"\n'
                      '[http]\nbind_address = "0.0.0.0"\n' % free_port())
    for command in ("check-config", "start"):
        args = [command, str(config)] if command == "check-config" else \
            [command, "--config", str(config)]
        out = subprocess.run([sys.executable, "run.py", *args], capture_output=True, text=True,
                             timeout=60, env=project_env())
        assert out.returncode == 2 and "http.token_file" in out.stderr, out.stderr
    assert not any(c.status == psutil.CONN_LISTEN and c.laddr.ip == "0.0.0.0"
                   for p in psutil.process_iter() if _is_ours(p)
                   for c in _connections(p))


def _is_ours(proc: psutil.Process) -> bool:
    try:
        return "run.py" in " ".join(proc.cmdline()) or "host.launcher" in " ".join(proc.cmdline())
    except psutil.Error:
        return False


def _connections(proc: psutil.Process) -> list:
    try:
        return proc.net_connections("inet")
    except psutil.Error:
        return []


def test_token_restart_and_stop(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    # A slow task still running when the stop's refusal and the streams' end have been seen
    # (0.3 s after it began, measured): the drain waits for it.
    daemon = start_daemon(tmp_path, echo_services(3000), 'token_file = "token"')  # relative path
    try:
        with httpx.Client(base_url=daemon.url, timeout=30) as anonymous:
            assert anonymous.get("/livez").status_code == 200
            for path in ("/readyz", "/v1/services", "/", "/openapi.json"):
                assert anonymous.get(path).status_code == 401, path
            assert anonymous.get("/readyz", headers={"Authorization": "Bearer nope"}
                                 ).status_code == 401
            assert anonymous.get(f"/readyz?access_token={TOKEN}").status_code == 200
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=daemon.url, timeout=30, headers=auth) as client:
            assert client.post("/v1/tasks/echo", json={"data": 1}).json()["data"] == 1
            # The launcher restarts a dead supervisor; the HTTP face follows it, and its
            # open event streams end so that their clients resume on the new runtime.
            old = json.loads(daemon.run("status", "--json").stdout)["supervisor_pid"]
            with client.stream("GET", "/v1/events", timeout=httpx.Timeout(30, read=30)) as r:
                stream = Events(r)
                stream.read(lambda ev: True)
                psutil.Process(old).kill()
                ended = stream.read(lambda ev: ev[-1]["event"] == "end")
                assert stream.closed(), "the server closes the stream after its end event"
            assert ended[-1]["data"]["reason"] == "the runtime restarted"
            wait_until(lambda: client.post("/v1/tasks/echo", json={"data": 2}).status_code
                       == 200, timeout=30, interval=0.2)
            assert json.loads(daemon.run("status", "--json").stdout)["supervisor_pid"] != old
            # The new runtime's processes are forked from the launcher: none of them may
            # keep a copy of the HTTP port's sockets (a closed stream would not close).
            port, launcher_pid = int(daemon.url.rsplit(":", 1)[1]), daemon.launcher_pid()
            holders = [p.pid for p in runtime_processes(str(daemon.logs / "config.json"))
                       if p.pid != launcher_pid and any(
                           c.laddr and c.laddr.port == port for c in _connections(p))]
            assert holders == []
            # A stop (SIGTERM, as systemd sends it): new tasks are refused, event streams
            # end, and a task already running is still answered.
            slow: dict[str, httpx.Response] = {}
            runner = threading.Thread(target=lambda: slow.setdefault("r", httpx.post(
                f"{daemon.url}/v1/tasks/slow", json={"data": "last"}, headers=auth,
                timeout=60)))
            with client.stream("GET", "/v1/events", timeout=httpx.Timeout(30, read=30)) as r:
                stream = Events(r)
                stream.read(lambda ev: True)
                runner.start()
                wait_until(lambda: client.get("/v1/services/slow").json()["queue_depth"] >= 1,
                           timeout=10)
                launcher = psutil.Process(daemon.launcher_pid())
                launcher.terminate()
                refused = wait_until(lambda: (lambda x: x if x.status_code == 503 else None)(
                    client.post("/v1/tasks/echo", json={"data": 3})), timeout=15, interval=0.05)
                assert error_of(refused)["code"] == "SHUTTING_DOWN", refused.text
                ended = stream.read(lambda ev: ev[-1]["event"] == "end")
                assert stream.closed(), "the server closes the stream after its end event"
            assert ended[-1]["data"]["reason"] == "shutting down"
            runner.join(60)
            assert slow["r"].status_code == 200 and slow["r"].json()["data"] == "last"
            # Not our child: no exit status to read, and ended once a zombie (whoever adopted
            # it reaps it when it does).
            wait_until(lambda: not alive(launcher.pid), timeout=60, interval=0.05)
        assert runtime_processes(str(daemon.logs / "config.json")) == []
    finally:
        daemon.stop()
