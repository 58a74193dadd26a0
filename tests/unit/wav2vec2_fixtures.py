"""Shared helpers for the wav2vec2 tests: checkpoints, a loaded service, test audio.

Test modules import the fixtures they use by name.
"""
from __future__ import annotations

import io
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile

from services.wav2vec2.checkpoint import make_checkpoint
from services.wav2vec2.service import Wav2Vec2Service
from services.wav2vec2.settings import Wav2Vec2Settings

RATE = 16_000


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("wav2vec2") / "tiny", size="tiny")


@pytest.fixture(scope="session")
def group_norm_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny, but with wav2vec2-base's group-norm feature encoder (no attention mask)."""
    return make_checkpoint(tmp_path_factory.mktemp("wav2vec2") / "tiny-group", size="tiny",
                           feat_extract_norm="group", do_stable_layer_norm=False)


def start_service(checkpoint: Path, max_memory: int | None = None,
                  **settings: object) -> Wav2Vec2Service:
    # One torch thread: on a shared 2-core machine, two spinning threads ran 20x slower.
    service = Wav2Vec2Service("wav2vec2-test", Wav2Vec2Settings(
        model=str(checkpoint), local_files_only=True, torch_threads=1, **settings),
        max_memory=max_memory)
    service.initialize()
    return service


@pytest.fixture(scope="session")
def tiny_service(tiny_checkpoint: Path):
    service = start_service(tiny_checkpoint)
    yield service
    service.shutdown()


def tone(seconds: float, rate: int = RATE, freq: float = 220.0, start: float = 0.0,
         stop: float | None = None, noise: float = 1e-3, seed: int = 0) -> np.ndarray:
    """A sine that sounds from ``start`` to ``stop`` over faint noise, float32."""
    t = np.arange(round(seconds * rate)) / rate
    on = (t >= start) & (t < (seconds if stop is None else stop))
    rng = np.random.default_rng(seed)
    signal = 0.3 * np.sin(2 * np.pi * freq * t) * on + noise * rng.standard_normal(t.shape)
    return signal.astype(np.float32)


def pcm16_wav(samples: np.ndarray, rate: int = RATE) -> bytes:
    """WAV bytes through the stdlib writer; ``samples`` is (frames,) or (frames, channels)."""
    frames = samples if samples.ndim == 2 else samples[:, None]
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(frames.shape[1])
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(np.round(np.clip(frames, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def audio_file(samples: np.ndarray, rate: int, format: str, subtype: str | None = None) -> bytes:
    """Audio file bytes written by libsndfile; ``samples`` is (frames,) or (frames, channels)."""
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=format, subtype=subtype)
    return buffer.getvalue()


def riff_wav(payload: bytes, format_tag: int, channels: int, rate: int, bits: int,
             extensible: bool = False) -> bytes:
    """A WAV file assembled by hand, for headers no writer would make."""
    block_align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else format_tag, channels, rate,
                      rate * block_align, block_align, bits)
    if extensible:  # cbSize, valid bits, channel mask, sub-format GUID: the tag, then the rest
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", format_tag) \
            + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    chunks += b"data" + struct.pack("<I", len(payload)) + payload + bytes(len(payload) & 1)
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks
