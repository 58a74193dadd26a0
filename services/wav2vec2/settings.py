"""Settings of the wav2vec2 service kind, checked when they are built."""
from __future__ import annotations

import dataclasses
import re

from services.settings import check, is_number, parse_size

DEVICES = ("cpu", "cuda", "auto")
_CUDA_INDEX = re.compile(r"^cuda:\d+$")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Wav2Vec2Settings:
    """What one wav2vec2 service loads and how much it takes on.

    ``model`` is a local checkpoint folder or a hub id. ``device`` "auto"
    picks CUDA when torch sees a GPU; CUDA cannot start in a forked process,
    so a GPU deployment needs the supervisor's spawn or forkserver start
    method. ``max_memory`` bounds the service process's resident memory (host
    RSS, not GPU memory): loading is refused when it would go over, and the
    service reports ``memory_ok: False`` when a batch leaves it over.
    """

    model: str = ""
    device: str = "cpu"
    torch_threads: int | None = None
    max_audio_seconds: float = 30.0
    max_memory: str | int | None = None
    max_batch_size: int = 8
    max_batch_delay_ms: float = 5.0
    max_queue: int = 64
    local_files_only: bool = False

    def __post_init__(self) -> None:
        check(isinstance(self.model, str) and bool(self.model.strip()), "model",
              "required: a local checkpoint folder or a hub id such as "
              "'facebook/wav2vec2-base-960h'")
        check(isinstance(self.device, str)
              and (self.device in DEVICES or bool(_CUDA_INDEX.match(self.device))), "device",
              f"must be one of {', '.join(DEVICES)} or cuda:N, got {self.device!r}")
        threads = self.torch_threads
        check(threads is None or (_is_int(threads) and threads >= 1), "torch_threads",
              f"must be an integer >= 1 or unset, got {threads!r}")
        check(is_number(self.max_audio_seconds) and self.max_audio_seconds > 0, "max_audio_seconds",
              f"must be a positive number of seconds, got {self.max_audio_seconds!r}")
        if self.max_memory is not None:
            parse_size(self.max_memory, "max_memory")
        check(_is_int(self.max_batch_size) and self.max_batch_size >= 1, "max_batch_size",
              f"must be an integer >= 1, got {self.max_batch_size!r}")
        check(is_number(self.max_batch_delay_ms) and self.max_batch_delay_ms >= 0,
              "max_batch_delay_ms", f"must be a number >= 0, got {self.max_batch_delay_ms!r}")
        check(_is_int(self.max_queue) and self.max_queue >= 1, "max_queue",
              f"must be an integer >= 1, got {self.max_queue!r}")
        check(isinstance(self.local_files_only, bool), "local_files_only",
              f"must be true or false, got {self.local_files_only!r}")

    @property
    def max_memory_bytes(self) -> int | None:
        return None if self.max_memory is None else parse_size(self.max_memory, "max_memory")
