"""Settings of the wav2vec2 service kind, checked when they are built."""
from __future__ import annotations

import dataclasses

from messages.errors import ConfigError
from messages.validation import check, is_int, require_seconds
from services.devices import DEVICES, is_device


@dataclasses.dataclass(frozen=True)
class Wav2Vec2Settings:
    """What one wav2vec2 service loads and how it runs the model.

    ``model`` is a local checkpoint folder or a hub id. ``device`` "auto"
    picks CUDA when torch sees a GPU and the process was not forked; CUDA
    cannot start in a forked process, so "cuda" and "cuda:N" need the spawn
    start method, and are placed on a member with a GPU (services.devices).
    Queue, batching and ``max_memory`` are the runtime's keys of the service
    (supervisor.config.ServiceSpec), not settings of the kind.
    """

    model: str = ""
    device: str = "cpu"
    torch_threads: int | None = None
    max_audio_seconds: float = 30.0
    local_files_only: bool = False

    def __post_init__(self) -> None:
        check(isinstance(self.model, str) and bool(self.model.strip()), "model",
              "required: a local checkpoint folder or a hub id such as "
              "'facebook/wav2vec2-base-960h'")
        check(is_device(self.device), "device",
              f"must be one of {', '.join(DEVICES)} or cuda:N, got {self.device!r}")
        threads = self.torch_threads
        check(threads is None or (is_int(threads) and threads >= 1), "torch_threads",
              f"must be an integer >= 1 or unset, got {threads!r}")
        require_seconds(self.max_audio_seconds, "max_audio_seconds", allow_none=False, error=ConfigError)
        check(isinstance(self.local_files_only, bool), "local_files_only",
              f"must be true or false, got {self.local_files_only!r}")
