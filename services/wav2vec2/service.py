"""``Wav2Vec2Service``: the wav2vec2 ModelService that the actor shell hosts.

Task types: ``speech-to-text`` (transcription), ``audio-feature-extraction``
(features), and ``audio_process`` / ``audio_analyze``, which take
``analysis_type`` transcription | features | patterns (defaults: transcription
and patterns). See ``requests`` for the task data and ``analyses`` for the
result shapes.

A batch is validated task by task (a bad task fails alone), then every valid
task shares one padded forward pass: the logits and last hidden state serve
all three analyses, and every layer's hidden states are kept only when some
task asks for them. Device "cuda" needs an actor system that starts actors
with spawn (CUDA cannot initialise in a forked process): ``requirements``
says so, and the supervisor places the service on one (services.devices).
"""
from __future__ import annotations

import gc
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import psutil

from messages.errors import ExecutionError, GrymError, InitError, ServiceUnavailable
from messages.task import Task
from runtime.allocator import keep_freed_memory
from services.devices import device_requirements
from services.model_service import ModelService, Outcome

from .audio import resample
from .requests import AudioRequest, RequestRules, parse_request
from .settings import Wav2Vec2Settings

# The model code (torch, transformers: ~8 s to import) is imported where it runs, not
# here: a launcher or `run.py status` that reads a config naming this kind loads this
# class for its settings and requirements only. The supervisor imports it all
# (preload_modules) before forking services, which therefore start warm.
if TYPE_CHECKING:
    from .model import LoadedModel


WARMUP_CLIP_S = 0.25
_process: psutil.Process | None = None


def process_rss_bytes() -> int:
    # One Process object per process: building one reads /proc each time (measured
    # 80 us a batch with it, 30 us without).
    global _process
    if _process is None or _process.pid != os.getpid():  # a forked child measures itself
        _process = psutil.Process()
    return _process.memory_info().rss


class Wav2Vec2Service(ModelService):
    kind = "wav2vec2"
    task_types = frozenset({"speech-to-text", "audio-feature-extraction",
                            "audio_process", "audio_analyze"})
    Settings = Wav2Vec2Settings
    # Concurrent clips share one forward pass unless the service's table says otherwise.
    runtime_defaults = {"max_batch_size": 8, "max_batch_delay_ms": 5.0}
    # ``import transformers`` alone is lazy: naming these modules also imports the
    # wav2vec2 classes (~2 s), so forked services start warm. Nothing here runs torch.
    preload_modules = ("torch", "transformers", "services.wav2vec2.model",
                       "services.wav2vec2.analyses", "services.wav2vec2.checkpoint")

    @classmethod
    def requirements(cls, settings: Wav2Vec2Settings) -> dict[str, Any]:
        return device_requirements(settings.device)  # CUDA: a GPU, and spawn

    def __init__(self, name: str, settings: Wav2Vec2Settings, **runtime: Any):
        super().__init__(name, settings, **runtime)
        self._loaded: LoadedModel | None = None
        self._rules: RequestRules | None = None
        self._random_weights = False
        self._load_s: float | None = None
        self._last_rss: int | None = None  # measured after loading and after each batch

    # -- lifecycle ---------------------------------------------------------------
    def initialize(self) -> None:
        import torch

        from .checkpoint import RANDOM_WEIGHTS_MARKER
        from .model import checkpoint_weight_bytes, load_model, quiet_transformers, resolve_device
        settings = self.settings
        quiet_transformers()
        keep_freed_memory()  # each batch reuses the last one's memory (runtime/allocator.py)
        if settings.torch_threads is not None:
            torch.set_num_threads(settings.torch_threads)
        limit = self.max_memory
        if limit is not None:
            # Refuse before loading when the weights alone would not fit.
            expected = process_rss_bytes() + checkpoint_weight_bytes(settings.model)
            _check_memory(expected, limit, "loading would bring the process to")
        started = time.perf_counter()
        try:
            loaded = load_model(settings.model, resolve_device(settings.device),
                                settings.local_files_only)
        except Exception as exc:
            raise InitError(f"cannot load wav2vec2 model {settings.model!r}: {exc}",
                            {"model": settings.model}) from exc
        self._load_s = time.perf_counter() - started
        self._last_rss = process_rss_bytes()
        if limit is not None:
            try:
                _check_memory(self._last_rss, limit, "after loading the process uses")
            except InitError:
                del loaded
                gc.collect()
                raise
        self._loaded = loaded
        self._rules = RequestRules(max_seconds=settings.max_audio_seconds,
                                   min_seconds=loaded.min_seconds, num_layers=loaded.num_layers)
        self._random_weights = (Path(loaded.source) / RANDOM_WEIGHTS_MARKER).is_file()
        self._initialized = True

    def shutdown(self) -> None:
        loaded, self._loaded = self._loaded, None
        if loaded is not None:
            on_gpu = loaded.device.type == "cuda"
            del loaded
            gc.collect()
            if on_gpu:
                import torch
                torch.cuda.empty_cache()
        self._initialized = False

    def warmup_inputs(self, max_batch_size: int) -> list[list[Task]]:
        """A short silent clip at the batch sizes the service will run, by powers of two
        up to the largest (1, 2, 4, 8 for 8): the first passes pay for torch's lazy
        allocation and kernel choice (here the first task took 3-4x a later one); every
        size in between would cost more CPU next to a serving generation during a
        rolling update, for no difference measured."""
        clip = np.zeros(round(WARMUP_CLIP_S * 16_000), np.float32)
        sizes = sorted({max_batch_size, *(2 ** k for k in range(max_batch_size.bit_length())
                                          if 2 ** k <= max_batch_size)})
        return [[Task(id=f"warmup-{size}-{i}", type="speech-to-text", data=clip)
                 for i in range(size)] for size in sizes]

    # -- work ----------------------------------------------------------------------
    def execute(self, task: Task) -> Any:
        outcome = self.execute_batch([task])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def execute_batch(self, tasks: Sequence[Task]) -> list[Outcome]:
        loaded, rules = self._loaded, self._rules
        if loaded is None or rules is None:
            return [ServiceUnavailable(f"service {self.name!r} is not initialized")
                    for _ in tasks]
        outcomes: list[Outcome] = [None] * len(tasks)
        ready: list[tuple[int, AudioRequest, np.ndarray]] = []
        for index, task in enumerate(tasks):
            try:
                request = parse_request(task, rules)
                waveform = resample(request.samples, request.sample_rate, loaded.sample_rate)
                ready.append((index, request, waveform))
            except GrymError as exc:
                outcomes[index] = exc
            except Exception as exc:  # a bug in reading this task must not sink the batch
                outcomes[index] = ExecutionError(f"reading the task failed: "
                                                 f"{type(exc).__name__}: {exc}")
        if ready:
            self._run(loaded, ready, outcomes)
        self._last_rss = process_rss_bytes()
        return outcomes

    def _run(self, loaded: LoadedModel, ready: list[tuple[int, AudioRequest, np.ndarray]],
             outcomes: list[Outcome]) -> None:
        from .analyses import build_result
        from .model import run_batch
        all_layers = any(request.layers for _, request, _ in ready)
        try:
            outputs = run_batch(loaded, [waveform for _, _, waveform in ready], all_layers)
        except Exception as exc:  # e.g. out of memory: every task of the pass fails
            failure = f"forward pass of {len(ready)} clip(s) failed: {type(exc).__name__}: {exc}"
            for index, _, _ in ready:
                outcomes[index] = ExecutionError(failure)
            return
        for (index, request, waveform), output in zip(ready, outputs):
            try:
                outcomes[index] = build_result(request, waveform, output, loaded)
            except Exception as exc:
                outcomes[index] = ExecutionError(
                    f"{request.analysis} failed: {type(exc).__name__}: {exc}")

    # -- status ----------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        settings = self.settings
        facts: dict[str, Any] = {"model": settings.model, "initialized": self._initialized,
                                 "random_weights": self._random_weights}
        if self._random_weights:
            facts["note"] = "random weights: text is noise"
        loaded = self._loaded
        if loaded is not None:
            import torch
            facts.update({
                "device": str(loaded.device), "parameters": loaded.parameters,
                "sample_rate": loaded.sample_rate, "layers": loaded.num_layers,
                "batching": "padded with attention mask" if loaded.pads_with_mask
                            else "equal-length clips only (group-norm encoder)",
                "load_s": self._load_s, "torch_threads": torch.get_num_threads(),
            })
        if self._last_rss is not None:
            facts["rss_bytes"] = self._last_rss
            limit = self.max_memory
            if limit is not None:
                facts["max_memory_bytes"] = limit
                facts["memory_ok"] = self._last_rss <= limit
        return facts


def _check_memory(rss: int, limit: int, what: str) -> None:
    if rss > limit:
        raise InitError(f"max_memory is {limit / 1e6:.1f} MB but {what} {rss / 1e6:.1f} MB; "
                        "raise max_memory or use a smaller model",
                        {"rss_bytes": rss, "max_memory_bytes": limit})
