"""Wav2Vec2Settings: defaults, and refusals that name the key."""
from __future__ import annotations

import dataclasses

import pytest

from messages.errors import ConfigError
from messages.validation import build_settings
from services.wav2vec2.settings import Wav2Vec2Settings


def build(**values):
    return build_settings(Wav2Vec2Settings, values, "services.asr")


def test_defaults():
    settings = build(model="facebook/wav2vec2-base-960h")
    assert (settings.device, settings.torch_threads, settings.max_audio_seconds) == ("cpu", None, 30.0)
    assert settings.local_files_only is False


@pytest.mark.parametrize("device", ["cpu", "cuda", "auto", "cuda:1"])
def test_devices(device):
    assert build(model="m", device=device).device == device


@pytest.mark.parametrize("values, key", [
    ({}, "model"),
    ({"model": "  "}, "model"),
    ({"model": "m", "device": "tpu"}, "device"),
    ({"model": "m", "torch_threads": 0}, "torch_threads"),
    ({"model": "m", "torch_threads": True}, "torch_threads"),
    ({"model": "m", "max_audio_seconds": -1}, "max_audio_seconds"),
    ({"model": "m", "max_audio_seconds": float("nan")}, "max_audio_seconds"),
    ({"model": "m", "local_files_only": "yes"}, "local_files_only"),
    ({"model": "m", "max_batchsize": 4}, "max_batchsize"),
])
def test_bad_values_are_refused_naming_the_key(values, key):
    with pytest.raises(ConfigError) as caught:
        build(**values)
    assert caught.value.details["key"] == f"services.asr.{key}"
    assert caught.value.message.startswith(f"services.asr.{key}")


def test_settings_are_frozen():
    settings = build(model="m")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.model = "other"


def test_reading_a_config_that_names_the_kind_does_not_import_torch():
    """A launcher or `run.py status` reads the config: the kind's class is loaded for its
    settings and requirements only (torch and transformers cost ~8 s to import)."""
    import subprocess
    import sys
    code = ("import sys; from supervisor.config import SystemConfig; "
            "SystemConfig.from_dict({'services': {'asr': {'kind': 'wav2vec2', 'model': 'x'}}}); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
