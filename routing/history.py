"""What the router stores as ``task_history`` context after a task."""
from __future__ import annotations

import json
from typing import Any

from messages.task import Task, TaskResult

MAX_STORED_DATA_BYTES = 4096


def task_history_content(task: Task, result: TaskResult, service: str) -> dict[str, Any]:
    """A JSON-safe summary: small JSON results are kept whole, others described."""
    m = result.metrics
    content: dict[str, Any] = {
        "task_type": task.type, "service": service, "status": result.status.value,
        "metrics": {"total_ms": round(m.total_ms, 3), "execution_ms": round(m.execution_ms, 3)},
    }
    if result.error is not None:
        content["error"] = {"code": result.error.code.value, "message": result.error.message}
    else:
        content["result"] = _json_or_summary(result.data)
    return content


def _json_or_summary(data: Any) -> Any:
    try:
        text = json.dumps(data)
    except (TypeError, ValueError):
        return {"summary": f"{type(data).__name__} (not JSON)"}
    if len(text) > MAX_STORED_DATA_BYTES:
        return {"summary": f"{type(data).__name__} of {len(text)} JSON bytes"}
    return data
