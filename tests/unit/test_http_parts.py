"""The HTTP layer's pure parts: status mapping, bodies, encoding, the guard, cursors, config."""
from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from fastapi import FastAPI, Request
from starlette.testclient import TestClient

from host.http import errors
from host.http.app import context_filter, version_of
from host.http.bodies import TaskBody, audio_task, json_task, query_value
from host.http.checks import check_http, read_token
from host.http.encoding import plain, result_json
from host.http.errors import HttpError, error_response, from_starlette, validation_error
from host.http.events import Cursor, sse
from host.http.guard import Guard
from messages.errors import ConfigError, ErrorCode, ErrorInfo, Overloaded
from messages.task import TaskMetrics, TaskResult
from supervisor.config import SystemConfig


# -- error codes -> statuses ----------------------------------------------------------------
@pytest.mark.parametrize("code, status", [
    ("INVALID_INPUT", 400), ("INVALID_TASK_TYPE", 400), ("NOT_FOUND", 404),
    ("SERVICE_NOT_FOUND", 404), ("CONFLICT", 409), ("OVERLOADED", 429),
    ("SERVICE_UNAVAILABLE", 503), ("SHUTTING_DOWN", 503), ("TIMEOUT", 504),
    ("EXECUTION_ERROR", 500), ("INIT_ERROR", 503), ("CONFIG_ERROR", 500)])
def test_every_error_code_has_its_status(code, status):
    response = error_response(ErrorInfo(ErrorCode(code), "why", {"service": "x"}))
    assert response.status_code == status
    assert json.loads(response.body) == {"error": {"code": code, "message": "why",
                                                   "details": {"service": "x"}}}


def test_overloaded_says_when_to_retry_and_others_do_not():
    assert error_response(Overloaded("full")).headers["retry-after"] == "1"
    assert "retry-after" not in error_response(ErrorInfo(ErrorCode.TIMEOUT, "late")).headers


def test_a_status_override_and_extra_members():
    response = error_response(ErrorInfo(ErrorCode.CONFLICT, "stale"), status=412,
                              extra={"task_id": "t"})
    assert response.status_code == 412 and json.loads(response.body)["task_id"] == "t"


def test_details_that_json_cannot_hold_become_text():
    body = json.loads(error_response(ErrorInfo(ErrorCode.INVALID_INPUT, "x", {
        "shape": (2, 3), "obj": object(), "n": None})).body)
    assert body["error"]["details"]["shape"] == [2, 3]
    assert body["error"]["details"]["n"] is None
    assert isinstance(body["error"]["details"]["obj"], str)


def test_starlette_refusals_keep_their_status_in_our_shape():
    from starlette.exceptions import HTTPException
    error = from_starlette(HTTPException(405, "Method Not Allowed"))
    assert (error.status, error.code) == (405, "METHOD_NOT_ALLOWED")


def test_validation_errors_name_the_field_and_malformed_json_is_400():
    with pytest.raises(HttpError) as bad_type:
        json_task(b'{"priority": "high", "extra": 1}', TaskBody)
    assert bad_type.value.status == 422
    assert bad_type.value.message.startswith("priority:")
    assert {e["field"] for e in bad_type.value.details["errors"]} == {"priority", "extra"}
    with pytest.raises(HttpError) as malformed:
        json_task(b'{"data": ', TaskBody)
    assert malformed.value.status == 400 and malformed.value.code == "INVALID_INPUT"
    assert validation_error([]).status == 422


def test_task_body_is_strict():
    assert json_task(b"", TaskBody)["priority"] == 5
    assert json_task(b'{"data": [1, "a"], "timeout_s": 2}', TaskBody)["timeout_s"] == 2.0
    for body in (b'{"priority": 11}', b'{"priority": "5"}', b'{"store_results": 1}',
                 b'{"timeout_s": 0}', b'{"metadata": []}', b'{"id": ""}'):
        with pytest.raises(HttpError) as err:
            json_task(body, TaskBody)
        assert err.value.status == 422, body


# -- audio bodies ---------------------------------------------------------------------------
def test_compressed_audio_is_passed_on_as_bytes_with_the_fields_from_the_query():
    fields = audio_task(b"fLaC...", "audio/flac", {"priority": "7", "id": "42"}, TaskBody)
    assert fields["data"] == b"fLaC..." and fields["priority"] == 7 and fields["id"] == "42"
    with_extra = audio_task(b"RIFF", "audio/wav", {"downmix": "true", "layers": "[0, 2]"},
                            TaskBody)
    assert with_extra["data"] == {"audio": b"RIFF", "downmix": True, "layers": [0, 2]}


def test_raw_pcm_becomes_an_array_and_a_rate():
    samples = np.array([[0.5, -0.5], [0.25, 0.0]], dtype="<f4")
    fields = audio_task(samples.tobytes(), "application/octet-stream",
                        {"sample_rate": "8000", "dtype": "float32", "channels": "2"}, TaskBody)
    assert fields["data"]["sample_rate"] == 8000
    np.testing.assert_array_equal(fields["data"]["audio"], samples)
    ints = audio_task(np.arange(4, dtype="<i2").tobytes(), "audio/pcm",
                      {"sample_rate": "16000", "dtype": "int16"}, TaskBody)["data"]["audio"]
    assert ints.dtype == np.int16 and ints.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("query, body, status, field", [
    ({"dtype": "float32"}, b"\0" * 8, 422, "sample_rate"),
    ({"sample_rate": "16000"}, b"\0" * 8, 422, "dtype"),
    ({"sample_rate": "16000", "dtype": "int8"}, b"\0" * 8, 422, "dtype"),
    ({"sample_rate": "fast", "dtype": "int16"}, b"\0" * 8, 422, "sample_rate"),
    ({"sample_rate": "16000", "dtype": "float32"}, b"\0" * 6, 400, None),
    ({"sample_rate": "16000", "dtype": "float32", "priority": "high"}, b"\0" * 8, 422,
     "priority"),
])
def test_bad_pcm_parameters_are_refused_by_name(query, body, status, field):
    with pytest.raises(HttpError) as err:
        audio_task(body, "audio/pcm", query, TaskBody)
    assert err.value.status == status
    if field:
        assert err.value.details["field"] == field


def test_an_empty_audio_body_is_refused():
    with pytest.raises(HttpError) as err:
        audio_task(b"", "audio/wav", {}, TaskBody)
    assert err.value.status == 400


def test_query_values_read_as_json_else_text():
    assert [query_value(v) for v in ("true", "3", "0.5", "[1]", "en", "")] == \
        [True, 3, 0.5, [1], "en", ""]


# -- results as JSON --------------------------------------------------------------------------
def test_arrays_as_lists_or_compact_float32():
    data = {"embedding": np.array([[1.0, 2.5], [np.nan, 4.0]]), "n": np.int64(3),
            "raw": b"\x00\x01", "x": float("inf")}
    listed = plain(data)
    assert listed["embedding"] == [[1.0, 2.5], [None, 4.0]] and listed["n"] == 3
    assert listed["x"] is None and listed["raw"] == {"base64": "AAE=", "bytes": 2}
    packed = plain(data, "base64")["embedding"]
    assert packed["dtype"] == "float32" and packed["shape"] == [2, 2]
    back = np.frombuffer(base64.b64decode(packed["base64"]), "<f4").reshape(packed["shape"])
    np.testing.assert_array_equal(back[0], [1.0, 2.5])
    json.dumps(plain(data, "base64"), allow_nan=False)


def test_a_completed_result_as_json():
    body = result_json(TaskResult.success("t1", {"a": np.float32(0.5)}, TaskMetrics(total_ms=2)))
    assert body == {"task_id": "t1", "status": "completed", "data": {"a": 0.5},
                    "metrics": {**TaskMetrics(total_ms=2).__dict__}}


# -- the guard ----------------------------------------------------------------------------------
def guarded(token: str | None, max_body_bytes: int = 100) -> TestClient:
    app = FastAPI()

    @app.get("/livez")
    @app.get("/readyz")
    async def ok() -> dict:
        return {"ok": True}

    @app.post("/echo")
    async def echo(request: Request) -> dict:
        return {"size": len(await request.body())}

    @app.exception_handler(HttpError)
    async def on_error(_request, exc):
        return error_response(exc)

    return TestClient(Guard(app, token, max_body_bytes))


def test_the_token_is_needed_everywhere_but_livez():
    client = guarded("s3cret-token-0123456789")
    assert client.get("/livez").status_code == 200
    refused = client.get("/readyz")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "UNAUTHORIZED"
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/readyz", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/readyz", headers={"Authorization": "Basic s3cret-token-0123456789"}
                      ).status_code == 401
    assert client.get("/readyz", headers={"Authorization": "Bearer s3cret-token-0123456789"}
                      ).status_code == 200
    assert client.get("/readyz?access_token=s3cret-token-0123456789").status_code == 200
    assert guarded(None).get("/readyz").status_code == 200


def test_bodies_over_the_limit_are_413_with_or_without_a_length():
    client = guarded(None, max_body_bytes=100)
    assert client.post("/echo", content=b"x" * 100).json() == {"size": 100}
    declared = client.post("/echo", content=b"x" * 101)
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    chunked = client.post("/echo", content=iter([b"x" * 60, b"x" * 60]))
    assert chunked.status_code == 413


# -- event ids, SSE framing, query parsing ---------------------------------------------------------
def test_cursors_round_trip_and_strangers_are_ignored():
    assert Cursor.parse("12") == Cursor(12, None) and Cursor(12).id() == "12"
    assert Cursor.parse("12:345") == Cursor(12, 345) and Cursor(12, 345).id() == "12:345"
    for text in (None, "", "x", "1:y", "-1", "3:-2"):
        assert Cursor.parse(text) is None


def test_sse_framing():
    assert sse("health", {"a": 1}, "7") == 'event: health\nid: 7\ndata: {"a":1}\n\n'
    assert sse("end", {"reason": "x"}) == 'event: end\ndata: {"reason":"x"}\n\n'


def test_if_match_names_one_version():
    assert version_of('"7"') == 7 and version_of("7") == 7 and version_of("*") is None
    for bad in ('W/"7"', '"7", "8"', '"x"'):
        with pytest.raises(HttpError):
            version_of(bad)


def test_context_filter_from_the_query():
    class Fake:
        def __init__(self, items):
            from starlette.datastructures import QueryParams
            self.query_params = QueryParams(items)

    flt = context_filter(Fake([("type", "prompt,features"), ("tag", "a"), ("tag", "b"),
                               ("min_priority", "high"), ("content", '{"lang": "en"}'),
                               ("updated_since", "10")]), limit=5)
    assert flt.types == {"prompt", "features"} and flt.tags == {"a", "b"}
    assert flt.min_priority == 8 and flt.content == {"lang": "en"} and flt.limit == 5
    assert flt.updated_since == 10.0
    with pytest.raises(HttpError):
        context_filter(Fake([("content", "{nope")]))
    with pytest.raises(HttpError):
        context_filter(Fake([("created_since", "yesterday")]))


# -- the [http] table ---------------------------------------------------------------------------------
def test_http_settings_are_checked_by_key():
    config = SystemConfig.from_dict({"http": {"enabled": True, "max_body_bytes": "2MiB"}})
    assert config.http.max_body_bytes == 2 * 2**20 and config.http.port is None
    for table, key in (({"port": 80}, "http.port"), ({"bind_address": "nowhere"}, "http."),
                       ({"max_body_bytes": -1}, "http.max_body_bytes"),
                       ({"bind_address": "0.0.0.0"}, "http.token_file"),
                       ({"enabled": "yes"}, "http.enabled"), ({"tls": True}, "http.tls")):
        with pytest.raises(ConfigError) as err:
            SystemConfig.from_dict({"http": table})
        assert err.value.message.startswith(key), err.value.message
    SystemConfig.from_dict({"http": {"bind_address": "0.0.0.0", "token_file": "/t"}})


def test_the_token_file_must_hold_a_token(tmp_path):
    assert read_token(None) is None
    with pytest.raises(ConfigError, match="http.token_file: cannot read"):
        read_token(str(tmp_path / "missing"))
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(ConfigError, match="at least 16"):
        read_token(str(short))
    good = tmp_path / "good"
    good.write_text("  0123456789abcdef0123\n")
    assert read_token(str(good)) == "0123456789abcdef0123"


def test_the_http_port_must_not_be_another_port_of_the_runtime():
    for http, metrics in (({"port": 20000}, {}), ({"port": 20005}, {"enabled": True,
                                                                    "port": 20005})):
        config = SystemConfig.from_dict({"system": {"admin_port": 20000},
                                         "http": {"enabled": True, **http}, "metrics": metrics})
        with pytest.raises(ConfigError, match="http.port: .* is also"):
            check_http(config)
    check_http(SystemConfig.from_dict({"http": {"enabled": False, "port": 19500}}))


def test_a_forked_child_lets_go_of_the_served_port_only():
    import os
    import socket
    import stat

    from host.launcher import forget_sockets_on

    with socket.socket() as http, socket.socket() as other:
        http.bind(("127.0.0.1", 0))
        http.listen()
        other.bind(("127.0.0.1", 0))
        other.listen()
        pid = os.fork()
        if pid == 0:  # the child: report through the exit status
            forget_sockets_on(http.getsockname()[1])
            gone = stat.S_ISCHR(os.fstat(http.fileno()).st_mode)   # now /dev/null
            kept = stat.S_ISSOCK(os.fstat(other.fileno()).st_mode)
            os._exit(0 if gone and kept else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert stat.S_ISSOCK(os.fstat(http.fileno()).st_mode)  # the parent keeps its own
