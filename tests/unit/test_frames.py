"""Signed, size-limited frames (runtime.frames), without an actor system."""
from __future__ import annotations

import json
import logging
import os
import pickle
import random
import stat

import numpy as np
import pytest
from thespian.system.transport import TCPTransport

from messages.errors import ConfigError, ErrorCode
from runtime import frames


@pytest.fixture(autouse=True)
def fresh(monkeypatch, tmp_path):
    """Each test gets its own key, limit, counts and environment, restored after it."""
    for name in (frames.ENV_SECRET, frames.ENV_MAX_BYTES, frames.ENV_REJECTED_DIR):
        monkeypatch.delenv(name, raising=False)
    for name in ("key", "acks", "limit"):
        monkeypatch.setattr(frames._State, name, getattr(frames._State, name))
    for name in ("ackMsg", "ackDataErrMsg"):
        monkeypatch.setattr(TCPTransport, name, getattr(TCPTransport, name))
    for name in ("by_reason", "logged_at", "quiet", "file"):
        monkeypatch.setattr(frames._Counts, name, {} if name != "file" else None)
    frames._State.key = None
    frames.use_secret_file(tmp_path / "keys" / "secret.key", create=True)
    frames.limit_message_bytes(4 << 20)


class FakeSocket:
    def getpeername(self):
        return ("127.0.0.9", 40000)


def read(frame: bytes, sock=FakeSocket(), chunks=(20,)) -> frames.FrameReader:
    """Feed ``frame`` to a reader the way Thespian does, in chunks of the given sizes."""
    reader, data, sizes = frames.FrameReader(pickle.loads, sock=sock), bytes(frame), list(chunks)
    while data and not reader.isDone():
        size = sizes.pop(0) if sizes else random.randint(1, 70_000)
        reader.addMore(data[:size])
        data = data[size:]
    if data:
        reader.addMore(data)
    return reader


def test_a_frame_round_trips_in_any_chunking_and_keeps_what_follows_it():
    message = {"text": "x" * 100, "audio": np.arange(300_000, dtype=np.float32),
               "fortran": np.asfortranarray(np.ones((30, 40))), "bytes": b"\x00" * 5000}
    frame = bytes(frames.encode(message))
    for chunks in ((20,), (1, 1, 1, 500), (len(frame),)):
        reader = read(frame + b"12>next", chunks=chunks)
        got, extra = reader.completed()
        assert got.keys() == message.keys() and got["text"] == message["text"]
        assert np.array_equal(got["audio"], message["audio"])
        assert np.array_equal(got["fortran"], message["fortran"])
        assert extra == b"12>next"


def test_arrays_arrive_aligned_as_views_of_the_frame():
    frame = bytes(frames.encode(("x", np.ones(1000, dtype=np.float64), np.ones(7, np.int8),
                                 np.ones(1000, dtype=np.float32))))
    got, _ = read(frame).completed()
    for array in got[1:]:
        assert array.ctypes.data % 16 == 0 and array.flags.writeable
        base = array
        while isinstance(base, np.ndarray):
            base = base.base
        assert isinstance(base, memoryview) and isinstance(base.obj, bytearray)  # not copied


def test_thespians_acknowledgements_are_signed_and_read_back():
    for packet, sent in ((TCPTransport.ackPacket, TCPTransport.ackMsg),
                         ("ACK+DATAERR", TCPTransport.ackDataErrMsg)):
        assert read(sent, sock=None).completed() == (packet, b"")
        assert pickle.dumps(packet) not in bytes(sent)[:len(pickle.dumps(packet))]


@pytest.mark.parametrize("tag", [b"", os.urandom(32)], ids=["no key", "wrong key"])
def test_an_unsigned_or_wrongly_signed_frame_is_refused_unread(tmp_path, tag):
    marker = tmp_path / "ran"
    body = pickle.dumps((None, RunsCode(str(marker))))
    frame = b"%d>" % len(tag + body) + tag + body
    with pytest.raises(frames.FrameRejected, match="bad_tag"):
        read(frame)
    assert not marker.exists()
    assert frames.rejected_frames()["bad_tag"] == 1
    # Read on a connection this process opened (an answer), it reads as corrupt: retried.
    reader = read(frame, sock=None)
    assert reader.isDone() and reader.completed() is None and not marker.exists()


def test_a_frame_signed_with_another_key_is_refused(tmp_path):
    frame = bytes(frames.encode({"hello": 1}))
    frames.use_secret_file(frames.write_secret_file(tmp_path / "other.key"))
    frames._State.key = os.urandom(32)  # another runtime's key
    with pytest.raises(frames.FrameRejected):
        read(frame)


def test_a_frame_over_the_limit_is_refused_from_its_header():
    reader = frames.FrameReader(pickle.loads, sock=FakeSocket())
    with pytest.raises(frames.FrameRejected, match="too_large"):
        reader.addMore(b"%d>" % ((4 << 20) + 33))  # the body never comes: nothing waits for it
    assert frames.rejected_frames()["too_large"] == 1
    assert reader.remainingAmount() == 20 and reader.isDone()


@pytest.mark.parametrize("head", [b"x" * 30, b"12a>" + b"x" * 40, b"5>" + b"x" * 5])
def test_a_malformed_header_is_refused(head):
    with pytest.raises(frames.FrameRejected, match="bad_header"):
        frames.FrameReader(pickle.loads, sock=FakeSocket()).addMore(head)


def test_sending_over_the_limit_is_refused_with_the_size_and_the_limit():
    with pytest.raises(frames.MessageTooLarge) as refused:
        frames.encode({"audio": np.zeros(2 << 20, dtype=np.float32)})  # 8 MiB
    assert refused.value.code is ErrorCode.INVALID_INPUT
    assert str(4 << 20) in refused.value.message and "8388" in refused.value.message
    assert refused.value.details["limit_bytes"] == 4 << 20
    frames.encode({"audio": np.zeros((1 << 20) - 100, dtype=np.float32)})  # just under
    frames.encode(b"x" * ((4 << 20) - 100))


def test_no_key_means_no_frames(tmp_path):
    frames._State.key = None
    with pytest.raises(ConfigError, match="use_secret_file"):
        frames.encode("hello")


def test_the_key_file_is_made_once_with_mode_0600_and_reused(tmp_path):
    path = tmp_path / "state" / "secret.key"
    frames._State.key = None
    frames.use_secret_file(path, create=True)
    key = path.read_bytes()
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.environ[frames.ENV_SECRET] == str(path)
    frames._State.key = None
    frames.use_secret_file(path, create=True)  # a daemon's restart: the same key
    assert path.read_bytes() == key == frames._State.key


@pytest.mark.parametrize("problem", ["mode", "size", "missing", "folder"])
def test_a_key_file_others_could_read_or_swap_is_refused(tmp_path, problem):
    path = frames.write_secret_file(tmp_path / "k" / "secret.key")
    if problem == "mode":
        path.chmod(0o644)
    elif problem == "size":
        path.write_bytes(b"short")
    elif problem == "missing":
        path.unlink()
    else:
        path.parent.chmod(0o777)
    with pytest.raises(ConfigError, match="system.secret_file"):
        frames.use_secret_file(path)


def test_refused_frames_are_logged_once_a_minute_per_peer(caplog, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(frames.time, "monotonic", lambda: clock[0])
    with caplog.at_level(logging.WARNING, logger="grym.frames"):
        for _ in range(5):
            frames._record("bad_tag", "10.0.0.1", "x")
        frames._record("bad_tag", "10.0.0.2", "x")
        clock[0] += 61
        frames._record("too_large", "10.0.0.1", "x")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert "refused_since_last_line=5" in lines[2]  # the four quiet ones and this one
    assert frames.rejected_frames() == {"bad_tag": 6, "too_large": 1, "bad_header": 0}


def test_every_process_counts_in_a_file_the_launcher_sums(tmp_path):
    directory = tmp_path / "rejected"
    directory.mkdir()
    (directory / "stale.json").write_text("{}")
    frames.count_rejections_in(directory)
    assert not (directory / "stale.json").exists()  # a new runtime starts from zero
    (directory / "1-other.json").write_text(json.dumps({"bad_tag": 2}))
    (directory / "2-half-written.json").write_text("{")
    frames._record("bad_tag", "p", "x")
    frames._record("too_large", "p", "x")
    assert frames.rejected_frames() == {"bad_tag": 3, "too_large": 1, "bad_header": 0}
    pid = os.fork()
    if pid == 0:  # a forked child counts afresh, in a file of its own
        frames._record("bad_header", "p", "x")
        os._exit(0 if frames._Counts.by_reason == {"bad_header": 1} else 1)
    assert os.waitpid(pid, 0)[1] == 0
    assert frames.rejected_frames() == {"bad_tag": 3, "too_large": 1, "bad_header": 1}


class RunsCode:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))
