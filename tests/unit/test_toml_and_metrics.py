"""TOML errors with lines; Prometheus families from the actors' reports."""
from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from routing.metrics import RouterMetrics
from messages import TaskMetrics, TaskResult
from messages.context import ContextStats
from messages.errors import ConfigError, Overloaded
from messages.service import ServiceMetrics, ServiceStatus
from messages.system import MetricsReport, ServiceInfo, SystemInfo
from host.observability import context_families, router_families, service_families
from host.toml_config import key_line, load_config

TEXT = """# comment
[system]
admin_port = 19555

[services.asr]
kind = "echo"
max_memory = "-1GB"

[services."quoted.name"]
kind = "echo"
"""


@pytest.mark.parametrize("key,line", [
    ("system.admin_port", 3), ("services.asr.max_memory", 7), ("services.asr.unknown", 5),
    ("services.quoted.name.kind", 10), ("routes.x", None), ("system", 2),
])
def test_key_line(key, line):
    assert key_line(TEXT, key) == line


def test_load_config_reports_file_line_and_key(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(TEXT)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}:7: services.asr.max_memory")
    path.write_text("[system\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def exposition(families) -> str:
    class Fixed:
        def collect(self):
            return list(families)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())
    return generate_latest(registry).decode()


def test_router_families_are_conventional():
    m = RouterMetrics()
    m.record("asr", "speech-to-text", TaskResult.success("t", 1, TaskMetrics(
        total_ms=12.0, queue_ms=1.0, execution_ms=10.0, routing_ms=1.0)))
    m.record("asr", "speech-to-text", TaskResult.failure("u", Overloaded("x").info()))
    m.record_refusal("none", "unrouted", "INVALID_TASK_TYPE")
    text = exposition(router_families(m.snapshot({"asr": 0}, late_results=2)))
    assert 'grym_requests_total{outcome="ok",service="asr",type="speech-to-text"} 1.0' in text
    assert 'grym_requests_total{outcome="overloaded",service="asr",type="speech-to-text"} 1.0' in text
    assert 'grym_task_stage_seconds_bucket{le="0.0001",service="asr",stage="total"} 0.0' in text
    assert 'grym_task_stage_seconds_bucket{le="0.025",service="asr",stage="total"} 1.0' in text
    assert 'grym_task_stage_seconds_sum{service="asr",stage="compute"} 0.01' in text
    assert "grym_late_results_total 2.0" in text


def test_service_and_context_families():
    info = SystemInfo(supervisor=None, router=None, context=None, services=(
        ServiceInfo("asr", "wav2vec2", ServiceStatus.DEGRADED, restarts=3),),
        default_task_timeout_s=30)
    report = MetricsReport((ServiceMetrics(name="asr", rss_bytes=123, queue_depth=4),))
    text = exposition(list(service_families(info, report)) +
                      list(context_families(ContextStats(items=5, bytes=10, evictions=1,
                                                         expirations=2))))
    assert 'grym_service_up{service="asr"} 1.0' in text
    assert 'grym_service_state{service="asr",state="degraded"} 1.0' in text
    assert 'grym_service_restarts_total{service="asr"} 3.0' in text
    assert 'grym_service_resident_memory_bytes{service="asr"} 123.0' in text
    assert "grym_context_items 5.0" in text and "grym_context_evictions_total 1.0" in text
