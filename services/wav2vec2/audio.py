"""Audio in: WAV decoding, sample checks and band-limited resampling.

Plain numpy, so all of it can be checked without a model. Every refusal is an
``InvalidInput`` whose message says what was wrong and what to send instead.
"""
from __future__ import annotations

import functools
import math
import struct
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from messages.errors import InvalidInput

ACCEPTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int16))
# A 2-D array's channel axis is the short one; more channels than this and we
# would rather refuse than guess which axis holds the samples.
MAX_GUESSED_CHANNELS = 16

_PCM, _IEEE_FLOAT, _EXTENSIBLE = 0x0001, 0x0003, 0xFFFE


# -- WAV decoding ----------------------------------------------------------------

def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """RIFF/WAVE bytes -> (float samples shaped (frames, channels), sample rate).

    Reads the RIFF chunks directly rather than through the stdlib ``wave``
    module, which only knows integer PCM: this also takes IEEE float WAVs and
    WAVE_FORMAT_EXTENSIBLE headers. Integer PCM (8-bit unsigned, 16, 24 and
    32-bit signed) is scaled to [-1, 1); float samples are returned as stored.
    A data chunk that claims more bytes than there are (streaming writers)
    is read up to the last whole frame.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise InvalidInput("audio bytes are not a WAV file (no RIFF/WAVE header); "
                           "send WAV bytes or a numpy array of samples")
    fmt, payload = _read_chunks(data)
    if fmt is None or payload is None:
        missing = "fmt" if fmt is None else "data"
        raise InvalidInput(f"WAV file has no '{missing}' chunk, so it cannot be decoded")
    if len(fmt) < 16:
        raise InvalidInput("WAV 'fmt' chunk is truncated")
    tag, channels, rate, _, block_align, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == _EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack("<H", fmt[24:26])[0]  # first bytes of the sub-format GUID
    if channels < 1 or rate < 1 or block_align < channels or block_align % channels:
        raise InvalidInput(f"WAV header is inconsistent: {channels} channels, {rate} Hz, "
                           f"{block_align} bytes per frame")
    width = block_align // channels
    usable = len(payload) - len(payload) % block_align
    raw = payload[:usable]
    samples = _decode_samples(raw, tag, width, bits)
    return samples.reshape(-1, channels), rate


def _read_chunks(data: bytes) -> tuple[bytes | None, bytes | None]:
    fmt = payload = None
    offset = 12
    while offset + 8 <= len(data):
        chunk_id = data[offset:offset + 4]
        size = struct.unpack("<I", data[offset + 4:offset + 8])[0]
        body = data[offset + 8:offset + 8 + size]
        if chunk_id == b"fmt ":
            fmt = body
        elif chunk_id == b"data":
            payload = body
        offset += 8 + size + (size & 1)  # chunks are padded to an even length
    return fmt, payload


def _decode_samples(raw: bytes, tag: int, width: int, bits: int) -> np.ndarray:
    if tag == _IEEE_FLOAT and width in (4, 8):
        return np.frombuffer(raw, dtype="<f4" if width == 4 else "<f8").astype(np.float64)
    if tag == _PCM and width == 1:  # 8-bit WAV is unsigned, centred on 128
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    if tag == _PCM and width in (2, 4):
        ints = np.frombuffer(raw, dtype="<i2" if width == 2 else "<i4")
        return ints.astype(np.float64) / float(2 ** (8 * width - 1))
    if tag == _PCM and width == 3:
        triples = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)  # sign-extend 24 bits
        return ints.astype(np.float64) / float(1 << 23)
    kind = {_PCM: "integer PCM", _IEEE_FLOAT: "float"}.get(tag, f"format tag {tag:#06x}")
    raise InvalidInput(f"WAV encoding not supported: {kind} with {bits} bits per sample; "
                       "send 8/16/24/32-bit integer PCM or 32/64-bit float WAV")


# -- sample checks ---------------------------------------------------------------

def load_samples(audio: Any, sample_rate: int, *, downmix: bool, max_seconds: float,
                 min_seconds: float) -> tuple[np.ndarray, int]:
    """Raw audio (numpy array or WAV bytes) -> (mono float64 samples, sample rate).

    For WAV bytes the rate comes from the header; for arrays it is
    ``sample_rate``. The duration is checked before the samples are scanned,
    so an oversized array is refused without touching it.
    """
    if isinstance(audio, (bytes, bytearray, memoryview)):
        samples, rate = decode_wav(bytes(audio))
        channel_axis: int | None = 1
    elif isinstance(audio, np.ndarray):
        samples, rate = audio, sample_rate
        channel_axis = guess_channel_axis(audio)
    else:
        raise InvalidInput(f"audio must be a numpy array of samples or WAV bytes, "
                           f"got {type(audio).__name__}")
    if samples.size == 0:
        raise InvalidInput("audio is empty: there are no samples to process")
    mono = to_mono(as_float(samples), channel_axis, downmix)
    duration = mono.shape[0] / rate
    if duration > max_seconds:
        raise InvalidInput(f"audio is {duration:.2f} s long; this service takes at most "
                           f"{max_seconds:g} s (max_audio_seconds): split it into shorter pieces",
                           {"duration_s": duration, "max_audio_seconds": max_seconds})
    if duration < min_seconds:
        raise InvalidInput(f"audio is {duration * 1000:.1f} ms long; the model needs at least "
                           f"{min_seconds * 1000:.1f} ms to produce one frame",
                           {"duration_s": duration, "min_seconds": min_seconds})
    finite = np.isfinite(mono)
    if not finite.all():
        bad = int(mono.size - np.count_nonzero(finite))
        first = int(np.argmin(finite))
        raise InvalidInput(f"audio has {bad} NaN or infinite samples (the first at index {first}); "
                           "every sample must be a finite number", {"bad_samples": bad})
    return mono, rate


def as_float(samples: np.ndarray) -> np.ndarray:
    """float32/float64 as they are, int16 scaled by 1/32768; any other dtype refused."""
    if samples.dtype not in ACCEPTED_DTYPES:
        hint = ""
        if samples.dtype.kind == "c":
            hint = " (complex samples: send the real signal)"
        elif samples.dtype.kind in "OUS":
            hint = " (the array holds objects or text, not numbers)"
        raise InvalidInput(f"audio samples must be float32, float64 or int16, "
                           f"got {samples.dtype}{hint}", {"dtype": str(samples.dtype)})
    if samples.dtype == np.int16:
        return samples.astype(np.float64) / 32768.0
    return samples.astype(np.float64, copy=False)


def guess_channel_axis(array: np.ndarray) -> int | None:
    """Which axis of an audio array holds channels: None for 1-D, else 0 or 1."""
    if array.ndim == 1:
        return None
    if array.ndim != 2:
        raise InvalidInput(f"audio array must be 1-D (mono) or 2-D (channels x samples), "
                           f"got shape {array.shape}")
    rows, cols = array.shape
    if min(rows, cols) == 1:
        return 0 if rows == 1 else 1
    if rows < cols and rows <= MAX_GUESSED_CHANNELS:
        return 0
    if cols < rows and cols <= MAX_GUESSED_CHANNELS:
        return 1
    raise InvalidInput(f"cannot tell channels from samples in an array of shape {array.shape}; "
                       "send a 1-D mono array")


def to_mono(samples: np.ndarray, channel_axis: int | None, downmix: bool) -> np.ndarray:
    if channel_axis is None:
        return samples
    channels = samples.shape[channel_axis]
    if channels == 1:
        return samples.reshape(-1)
    if not downmix:
        raise InvalidInput(
            f"audio has {channels} channels (array shape {samples.shape}); the model takes mono "
            "audio: send one channel, or set \"downmix\": true to average the channels",
            {"channels": channels})
    return samples.mean(axis=channel_axis)


# -- resampling ------------------------------------------------------------------

def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited rational resampling with a Kaiser-windowed sinc, polyphase.

    With ``up/down = to_rate/from_rate`` in lowest terms, this is the classic
    upsample-by-``up``, low-pass, downsample-by-``down`` chain, except that only
    the kept output samples are computed, each as a dot product of one filter
    phase with the input samples around it. Outputs ``first, first + up, ...``
    share a phase and step ``down`` inputs apart, so each phase is one matrix
    product over a strided window view (no copies of the input). The low-pass
    sits at 95% of the lower Nyquist frequency so that the transition band
    stays below it and little aliases. Output length is ``ceil(len * up / down)``.
    """
    if from_rate == to_rate:
        return samples.astype(np.float64, copy=True)
    divisor = math.gcd(from_rate, to_rate)
    up, down = to_rate // divisor, from_rate // divisor
    table, half = _polyphase_table(up, down)
    taps = table.shape[1]
    padded = np.concatenate([np.zeros(taps), samples.astype(np.float64), np.zeros(taps + down + 1)])
    # windows[k + 1][j] == padded[k - j + taps], i.e. input sample k - j
    windows = sliding_window_view(padded, taps)[:, ::-1]
    out_len = -(-samples.shape[0] * up // down)
    out = np.empty(out_len)
    for first in range(min(up, out_len)):
        newest, phase = divmod(first * down + half, up)  # newest input sample under the filter
        count = len(range(first, out_len, up))
        out[first::up] = windows[newest + 1:newest + 1 + count * down:down] @ table[phase]
    return out


@functools.lru_cache(maxsize=8)  # an odd rate pair (44099 Hz) makes a ~11 MB table
def _polyphase_table(up: int, down: int, zero_crossings: int = 16,
                     rolloff: float = 0.95, beta: float = 8.6) -> tuple[np.ndarray, int]:
    """Filter taps split by phase: ``table[p, j] = h[p + j * up]``, and the filter's half length."""
    cutoff = rolloff / (2 * max(up, down))  # cycles per sample at the upsampled rate
    half = zero_crossings * max(up, down)
    n = np.arange(-half, half + 1)
    taps = up * 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(2 * half + 1, beta)
    per_phase = -(-taps.shape[0] // up)
    taps = np.concatenate([taps, np.zeros(per_phase * up - taps.shape[0])])
    return taps.reshape(per_phase, up).T.copy(), half
