"""Signed, size-limited frames for Thespian's TCP transport, in every process.

Thespian unpickles whatever arrives on an actor's port, so anyone who can open
a TCP connection to one could run code in the runtime. Here every frame carries
a keyed BLAKE3 tag over its pickled bytes (the idea of ``multiprocessing``'s
authkey and of Jupyter's signed messages), checked in constant time before a
byte of it is unpickled; a frame whose header announces more than the limit is
refused before its body is read. A refused frame closes its connection, is
counted (``grym_rejected_frames_total``) and is logged at most once a minute
per peer; the process keeps serving.

The frame keeps Thespian's own layout, ``b"<length>>" + body``; the body is a
32-byte tag followed by the message (layout below, with arrays out of band).
Thespian's fixed acknowledgements are signed once per key. Thespian's receive
buffer also grows by concatenating bytes (quadratic: one 230 MB message took
55 s and more here, and the actor's answers to everything else came late
meanwhile), and its sender re-slices the rest of a frame after each send. Here
the reader appends to a bytearray and hashes as chunks arrive, frames go out
as memoryviews, and arrays are unpickled as views of the frame: a large
message costs linear time in small steps, and the actor keeps answering
heartbeats while it arrives.

The key is 32 random bytes in a file of mode 0600 (``system.secret_file``,
default ``secret.key`` in the log directory, ``<tmp>/grym-<port>/``): a daemon's
launcher creates it at first start and keeps it across restarts;
``ServiceSystem.start`` hands its host's key (new at the host's first start) to
the runtime it starts, which writes it there. ``ServiceSystem.connect`` reads
it, and any other process joins with::

    from runtime import frames
    frames.use_secret_file("/tmp/grym-19500/secret.key")   # before its ActorSystem

Settings travel in environment variables, so a process started with spawn or
forkserver sets itself up when it imports this package, as a forked one
inherits the set-up. Keyed BLAKE3 was chosen by measurement: 2-3 times as fast
as HMAC-SHA256 on 1 MB here (``python -m bench transport`` prints both).
"""
from __future__ import annotations

import hmac
import json
import logging
import os
import pickle
import secrets
import stat
import struct
import threading
import time
from pathlib import Path
from typing import Any

import blake3
from thespian.system.transport import TCPTransport
from thespian.system.transport.streamBuffer import ackDataErrPacket, ackPacket

from messages.errors import ConfigError, InvalidInput

ENV_SECRET = "GRYM_SECRET_FILE"
ENV_MAX_BYTES = "GRYM_MAX_MESSAGE_BYTES"
ENV_REJECTED_DIR = "GRYM_REJECTED_FRAMES_DIR"
DEFAULT_MAX_MESSAGE_BYTES = 64 << 20
KEY_BYTES = TAG_BYTES = 32
MAX_HEADER_BYTES = 24          # b"<digits>>"; a longer header is not Thespian's
LOG_INTERVAL_S = 60.0
REASONS = ("bad_tag", "too_large", "bad_header")

# A standard logger (the host API configures nothing in the process it is embedded
# in), looked up when used: Thespian replaces the logging root in its processes.
LOGGER = "grym.frames"


class MessageTooLarge(InvalidInput):
    """A message over ``system.max_message_bytes``, refused before it is sent."""


class FrameRejected(Exception):
    """A received frame that is not let through; Thespian closes its connection."""


# -- the key --------------------------------------------------------------------------
class _State:
    key: bytes | None = None
    acks: dict[int, tuple[bytes, str]] = {}   # Thespian's acks: body size -> (body, packet)
    limit: int = DEFAULT_MAX_MESSAGE_BYTES


def use_secret_file(path: str | os.PathLike, *, create: bool = False) -> Path:
    """Sign and check every frame of this process with the key in ``path``.

    ``create``: make the file (this process's key, or 32 new random bytes) when
    it is missing, as a launcher does at first start. Refuses a file that is
    not this user's, that others may read or write, or that is not 32 bytes.
    """
    path = Path(path).absolute()
    if create and not path.exists():
        write_secret_file(path)
    _set_key(_read_secret(path))
    os.environ[ENV_SECRET] = str(path)
    return path


def write_secret_file(path: str | os.PathLike) -> Path:
    """Write this process's key (32 new random bytes if it has none) to ``path``,
    mode 0600, replacing what is there: ``ServiceSystem.start`` does this, so
    the runtimes one host starts share that host's key."""
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _check_folder(path)
    key = _State.key or secrets.token_bytes(KEY_BYTES)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, key)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def has_key() -> bool:
    return _State.key is not None


def _read_secret(path: Path) -> bytes:
    where = {"key": "system.secret_file", "path": str(path)}
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise ConfigError(f"system.secret_file: cannot read the runtime's key {path}: "
                          f"{exc.strerror} (a runtime creates it at its first start)",
                          where) from None
    try:
        st = os.fstat(fd)
        key = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if st.st_uid != os.geteuid() and os.geteuid() != 0:  # root may read a service user's key
        raise ConfigError(f"system.secret_file: {path} belongs to uid {st.st_uid}, not to this "
                          f"user (uid {os.geteuid()})", where)
    if st.st_mode & 0o077:
        raise ConfigError(f"system.secret_file: {path} has mode {stat.S_IMODE(st.st_mode):04o}; "
                          "others must not read it (chmod 600)", where)
    if len(key) != KEY_BYTES:
        raise ConfigError(f"system.secret_file: {path} must hold exactly {KEY_BYTES} bytes", where)
    _check_folder(path)
    return key


def _check_folder(path: Path) -> None:
    """Whoever may replace files in the key's folder may swap the key (a sticky
    folder such as /tmp lets nobody replace another user's file)."""
    st = path.parent.stat()
    others_write = st.st_mode & 0o002 and not st.st_mode & stat.S_ISVTX
    if (st.st_uid not in (os.geteuid(), 0) and os.geteuid() != 0) or others_write:
        raise ConfigError(f"system.secret_file: its folder {path.parent} may be written by other "
                          "users; keep the key in a folder only this user can write",
                          {"key": "system.secret_file", "path": str(path)})


def _set_key(key: bytes) -> None:
    _State.key = key
    acks = {packet: _encode(packet, key) for packet in (ackPacket, ackDataErrPacket)}
    bodies = {packet: frame[frame.index(b">") + 1:] for packet, frame in acks.items()}
    _State.acks = {len(body): (body, packet) for packet, body in bodies.items()}
    # Thespian sends these module-level frames as its acknowledgements.
    TCPTransport.ackMsg, TCPTransport.ackDataErrMsg = acks[ackPacket], acks[ackDataErrPacket]


def limit_message_bytes(limit: int) -> None:
    """Refuse to send, and to read, a pickled message over ``limit`` bytes."""
    _State.limit = int(limit)
    os.environ[ENV_MAX_BYTES] = str(_State.limit)


# -- sending --------------------------------------------------------------------------
# A body: tag | buffer count, pickle length | each buffer's length | pickle | buffers.
# Arrays travel as pickle protocol 5 out-of-band buffers, each at a 64-byte
# aligned offset: pickling them copies nothing, so a message over the limit is
# refused before its data is copied, and the receiver unpickles them as views
# of the frame it read instead of copying them once more.
_HEAD, _LEN, ALIGN = struct.Struct("<IQ"), struct.Struct("<Q"), 64
STREAM_HASH_BYTES = 1 << 16     # a frame past this is hashed chunk by chunk as it arrives


def _encode(obj: Any, key: bytes) -> bytes:
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    if buffers:
        try:
            return _with_buffers(data, [buffer.raw() for buffer in buffers], key)
        except BufferError:  # a buffer that is not contiguous: everything in-band
            data = pickle.dumps(obj, protocol=5)
    head = _HEAD.pack(0, len(data))
    return _signed(key, [head, data], len(head) + len(data))


def _with_buffers(data: bytes, raws: list[memoryview], key: bytes) -> bytes:
    parts = [_HEAD.pack(len(raws), len(data)), *[_LEN.pack(raw.nbytes) for raw in raws], data]
    end = TAG_BYTES + _HEAD.size + _LEN.size * len(raws) + len(data)
    for raw in raws:
        pad = -end % ALIGN
        parts += (bytes(pad), raw)
        end += pad + raw.nbytes
    return _signed(key, parts, end - TAG_BYTES)


def check_message_size(size: int) -> None:
    """The one size rule: a message over the limit is refused before it is sent, whether
    its bytes travel in the frame or in shared memory (runtime/shared_arrays.py)."""
    if size > _State.limit:
        raise MessageTooLarge(
            f"the message is {size} bytes, over the limit of {_State.limit} bytes "
            "(system.max_message_bytes)", {"size_bytes": size, "limit_bytes": _State.limit})


def _signed(key: bytes, parts: list, size: int) -> bytes:
    check_message_size(size)
    hasher = blake3.blake3(key=key)
    for part in parts:
        hasher.update(part)
    return b"".join([b"%d>" % (TAG_BYTES + size), hasher.digest(), *parts])


def _decode(body: bytearray) -> Any:
    view = memoryview(body)
    count, size = _HEAD.unpack_from(view, TAG_BYTES)
    at = TAG_BYTES + _HEAD.size + count * _LEN.size
    if not count:
        return pickle.loads(view[at:at + size])
    lengths = [_LEN.unpack_from(view, at - (count - i) * _LEN.size)[0] for i in range(count)]
    data, at = view[at:at + size], at + size
    buffers = []
    for length in lengths:
        at += -at % ALIGN
        buffers.append(view[at:at + length])
        at += length
    return pickle.loads(data, buffers=buffers)


def encode(obj: Any) -> memoryview:
    """One frame; a memoryview, so Thespian's ``frame[sent:]`` after each send copies nothing."""
    if _State.key is None:
        raise ConfigError("this process has no key for the runtime: call "
                          "runtime.frames.use_secret_file(path) before joining",
                          {"key": "system.secret_file"})
    return memoryview(_encode(obj, _State.key))


# -- receiving ------------------------------------------------------------------------
class FrameReader:
    """Stands in for Thespian's ``streamBuffer.ReceiveBuffer`` (same methods).

    ``sock``: the connection an incoming frame arrives on; a refused frame
    raises, and Thespian closes that connection. Without it (an answer read on
    a connection this process opened) a refused frame reads as corrupt, and
    Thespian retries its send.
    """

    __slots__ = ("_head", "_body", "_size", "_extra", "_sock", "_done", "_rejected", "_control",
                 "_hasher")

    def __init__(self, _deserialize: Any = None, sock: Any = None):
        self._head = b""
        self._body: bytearray | None = None
        self._size = 0
        self._extra = b""
        self._sock = sock
        self._done = self._rejected = False
        self._control: str | None = None
        self._hasher: Any = None

    def addMore(self, buf: bytes) -> None:  # noqa: N802 - Thespian's name
        body = self._body
        if body is None:
            if self._rejected:
                return
            buf = self._head + buf
            mark = buf.find(b">", 0, MAX_HEADER_BYTES)
            if mark < 0:
                if len(buf) >= MAX_HEADER_BYTES:
                    return self._reject("bad_header", "no frame header")
                self._head = buf
                return
            if not self._start(buf[:mark]):
                return
            body, buf = self._body, buf[mark + 1:]
        if self._done:
            self._extra += buf
            return
        want = self._size - len(body)
        if len(buf) > want:
            buf, self._extra = buf[:want], buf[want:]
        if self._hasher is not None:
            # A large frame is hashed as it arrives, so that no single step is long.
            skip = TAG_BYTES - len(body)
            self._hasher.update(buf[skip:] if skip > 0 else buf)
        body += buf
        if len(body) == self._size:
            self._done = True
            self._verify()

    def _start(self, digits: bytes) -> bool:
        """Check the header, before a byte of the body is read."""
        if not digits.isdigit() or int(digits) < TAG_BYTES:
            self._reject("bad_header", f"frame header {digits!r}")
            return False
        size = int(digits)
        if size - TAG_BYTES > _State.limit:
            self._reject("too_large", f"announced {size - TAG_BYTES} bytes, limit {_State.limit}")
            return False
        self._size, self._body = size, bytearray()
        if size > STREAM_HASH_BYTES and _State.key is not None:
            self._hasher = blake3.blake3(key=_State.key)
        return True

    def _verify(self) -> None:
        body, key = self._body, _State.key
        ack = _State.acks.get(len(body))
        if ack is not None and hmac.compare_digest(body, ack[0]):
            self._control = ack[1]
            return
        if key is None:
            return self._reject("bad_tag", "this process has no key")
        view = memoryview(body)
        digest = (self._hasher.digest() if self._hasher is not None
                  else blake3.blake3(view[TAG_BYTES:], key=key).digest())
        if not hmac.compare_digest(view[:TAG_BYTES], digest):
            self._reject("bad_tag", "missing or wrong tag")

    def _reject(self, reason: str, detail: str) -> None:
        self._rejected, self._body, self._head = True, None, b""
        _record(reason, _peer(self._sock), detail)
        if self._sock is not None:
            raise FrameRejected(f"{reason}: {detail}")

    def is_empty(self) -> bool:
        return not self._head and self._body is None and not self._rejected

    def remainingAmount(self) -> int:  # noqa: N802
        return 20 if self._body is None else self._size - len(self._body)

    def isDone(self) -> bool:  # noqa: N802
        return self._done or self._rejected

    def removeExtra(self) -> None:  # noqa: N802
        self._extra = b""

    def completed(self) -> tuple[Any, bytes] | None:
        if self._rejected or not self._done:
            return None
        if self._control is not None:
            return self._control, self._extra
        return _decode(self._body), self._extra


def _peer(sock: Any) -> str:
    try:
        return str(sock.getpeername()[0]) if sock is not None else "a peer this process called"
    except OSError:
        return "unknown"


# -- counting and logging refused frames ----------------------------------------------
class _Counts:
    lock = threading.Lock()
    by_reason: dict[str, int] = {}
    logged_at: dict[str, float] = {}    # peer -> when its last line was written
    quiet: dict[str, int] = {}          # peer -> refused since that line
    file: Path | None = None


def count_rejections_in(directory: str | os.PathLike) -> None:
    """Every process of the runtime writes its counts to a file in ``directory``
    (the launcher clears it at start and sums it for ``grym_rejected_frames_total``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for old in directory.glob("*.json"):
        old.unlink(missing_ok=True)
    os.environ[ENV_REJECTED_DIR] = str(directory)


def rejected_frames() -> dict[str, int]:
    """Refused frames by reason: the whole runtime's when this process keeps the
    runtime's count folder (the launcher), else this process's own."""
    directory = os.environ.get(ENV_REJECTED_DIR)
    if not directory:
        with _Counts.lock:
            return {reason: _Counts.by_reason.get(reason, 0) for reason in REASONS}
    total = dict.fromkeys(REASONS, 0)
    for path in Path(directory).glob("*.json"):
        try:
            for reason, n in json.loads(path.read_text()).items():
                total[reason] = total.get(reason, 0) + int(n)
        except (OSError, ValueError, AttributeError):
            continue  # being replaced right now, or not ours
    return total


def _record(reason: str, peer: str, detail: str) -> None:
    now = time.monotonic()
    with _Counts.lock:
        _Counts.by_reason[reason] = _Counts.by_reason.get(reason, 0) + 1
        _save_counts()
        _Counts.quiet[peer] = _Counts.quiet.get(peer, 0) + 1
        if now - _Counts.logged_at.get(peer, -LOG_INTERVAL_S) < LOG_INTERVAL_S:
            return
        _Counts.logged_at[peer], refused = now, _Counts.quiet.pop(peer)
    logging.getLogger(LOGGER).warning(
        "frame_rejected peer=%s reason=%s detail=%s refused_since_last_line=%d",
        peer, reason, detail, refused)


def _save_counts() -> None:
    directory = os.environ.get(ENV_REJECTED_DIR)
    if not directory:
        return
    if _Counts.file is None:
        _Counts.file = Path(directory, f"{os.getpid()}-{secrets.token_hex(4)}.json")
    tmp = _Counts.file.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(_Counts.by_reason))
        os.replace(tmp, _Counts.file)
    except OSError:
        pass  # the count in memory still stands; the folder may be gone at shutdown


def _forget_counts() -> None:
    """A forked child starts its own count (and file), with a fresh lock."""
    _Counts.lock = threading.Lock()
    _Counts.by_reason, _Counts.logged_at, _Counts.quiet, _Counts.file = {}, {}, {}, None


# -- wiring it into Thespian ----------------------------------------------------------
def _install() -> None:
    if getattr(TCPTransport, "_grym_frames", False):
        return
    stock_incoming_init = TCPTransport.TCPIncoming_Common.__init__

    def incoming_init(self, rmtAddr, baseSock, rcvBuf=None):  # noqa: ANN001, N803
        stock_incoming_init(self, rmtAddr, baseSock, rcvBuf or FrameReader(sock=baseSock))

    TCPTransport.TCPIncoming_Common.__init__ = incoming_init
    TCPTransport.ReceiveBuffer = FrameReader       # acknowledgements and answers we read
    TCPTransport.TCPTransport.serializer = lambda self, intent: encode(
        (self.myAddress, intent.message))
    TCPTransport._grym_frames = True
    os.register_at_fork(after_in_child=_forget_counts)


_install()
if os.environ.get(ENV_MAX_BYTES):
    limit_message_bytes(int(os.environ[ENV_MAX_BYTES]))
if os.environ.get(ENV_SECRET):
    if Path(os.environ[ENV_SECRET]).exists():  # else a stale variable: no key yet
        use_secret_file(os.environ[ENV_SECRET])
