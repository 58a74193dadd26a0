"""Loading a wav2vec2 CTC checkpoint, and the batched forward pass.

Batching and padding: the feature extractor pads a batch to its longest clip.
Checkpoints whose convolutional feature encoder uses layer norm
(``feat_extract_norm="layer"``, e.g. wav2vec2-large-960h-lv60-self and the
tiny test checkpoint) honour an attention mask, so any clips share one padded
pass and each still gets the frames it would get alone. Group-norm encoders
(``"group"``, e.g. wav2vec2-base-960h) normalise over the whole padded length
and were trained without a mask, so padding would change their output: those
batches are split into runs of equal length, each run one unpadded pass.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import transformers
from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

from runtime.capabilities import process_start_method
from services.devices import select_device

WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    model: Wav2Vec2ForCTC
    feature_extractor: Any
    tokenizer: Any
    device: torch.device
    source: str
    sample_rate: int
    hop_samples: int  # samples between consecutive frames: product of the conv strides
    window_samples: int  # samples one frame sees: the conv stack's receptive field
    num_layers: int
    pads_with_mask: bool

    @property
    def frame_stride_s(self) -> float:
        return self.hop_samples / self.sample_rate

    @property
    def min_seconds(self) -> float:
        return self.window_samples / self.sample_rate

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


@dataclasses.dataclass(frozen=True)
class FrameOutputs:
    """One clip's model outputs, trimmed to its own frames."""

    logits: np.ndarray  # (frames, vocab) float32
    hidden: np.ndarray  # (frames, hidden) float32: the last hidden state
    layers: tuple[np.ndarray, ...] = ()  # every hidden state, 0..num_layers, when asked for


def quiet_transformers() -> None:
    """No progress bars or load reports: they would spill into the service log."""
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def resolve_device(name: str) -> torch.device:
    return torch.device(select_device(name, _cuda_count, process_start_method()))


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def load_model(source: str, device: torch.device, local_files_only: bool) -> LoadedModel:
    """Load the CTC model and its processor through ``from_pretrained``."""
    if _looks_like_path(source):
        folder = Path(source).expanduser()
        if not folder.is_dir():  # from_pretrained would call it an invalid hub id
            raise FileNotFoundError(f"there is no checkpoint folder at {source}")
        source = str(folder)
    model = Wav2Vec2ForCTC.from_pretrained(source, local_files_only=local_files_only)
    processor = Wav2Vec2Processor.from_pretrained(source, local_files_only=local_files_only)
    model = model.to(device).eval()
    config = model.config
    window, hop = receptive_field(config.conv_kernel, config.conv_stride)
    return LoadedModel(
        model=model, feature_extractor=processor.feature_extractor,
        tokenizer=processor.tokenizer, device=device, source=source,
        sample_rate=int(processor.feature_extractor.sampling_rate),
        hop_samples=hop, window_samples=window, num_layers=int(config.num_hidden_layers),
        pads_with_mask=config.feat_extract_norm == "layer")


def _looks_like_path(source: str) -> bool:
    """Hub ids are 'name' or 'owner/name'; anything else is meant as a folder."""
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or Path(source).is_dir()


def checkpoint_weight_bytes(source: str) -> int:
    """Size of the weight files of a local checkpoint folder; 0 for a hub id."""
    folder = Path(source).expanduser()
    if not folder.is_dir():
        return 0
    return sum(f.stat().st_size for f in folder.iterdir() if f.name.endswith(WEIGHT_SUFFIXES))


def receptive_field(kernels: Sequence[int], strides: Sequence[int]) -> tuple[int, int]:
    """(samples one output frame sees, samples between frames) of a conv stack."""
    window, hop = 1, 1
    for kernel, stride in zip(kernels, strides):
        window += (kernel - 1) * hop
        hop *= stride
    return window, hop


def frame_count(num_samples: int, window: int, hop: int) -> int:
    """Frames the conv stack makes from ``num_samples``: nested floor divisions compose."""
    return 0 if num_samples < window else (num_samples - window) // hop + 1


def run_batch(loaded: LoadedModel, waveforms: Sequence[np.ndarray],
              all_layers: bool = False) -> list[FrameOutputs]:
    """Model outputs for clips (mono, at the model rate), in input order.

    One padded pass for all clips, or for group-norm encoders one unpadded
    pass per clip length (see the module docstring).
    """
    if loaded.pads_with_mask:
        groups = [list(range(len(waveforms)))]
    else:
        by_length: dict[int, list[int]] = defaultdict(list)
        for index, waveform in enumerate(waveforms):
            by_length[waveform.shape[0]].append(index)
        groups = list(by_length.values())
    outputs: list[FrameOutputs | None] = [None] * len(waveforms)
    for group in groups:
        group_outputs = _forward(loaded, [waveforms[i] for i in group], all_layers)
        for index, output in zip(group, group_outputs):
            outputs[index] = output
    return outputs  # type: ignore[return-value]  # every index was filled


def _forward(loaded: LoadedModel, waveforms: list[np.ndarray],
             all_layers: bool) -> list[FrameOutputs]:
    inputs = loaded.feature_extractor(
        [w.astype(np.float32, copy=False) for w in waveforms], sampling_rate=loaded.sample_rate,
        padding=True, return_attention_mask=loaded.pads_with_mask, return_tensors="pt")
    values = inputs["input_values"].to(loaded.device)
    mask = inputs["attention_mask"].to(loaded.device) if loaded.pads_with_mask else None
    with torch.inference_mode():
        # The encoder and the CTC head separately rather than Wav2Vec2ForCTC's forward:
        # that way the last hidden state comes without keeping every layer's states
        # (the head's dropout is a no-op in eval mode).
        encoded = loaded.model.wav2vec2(values, attention_mask=mask,
                                        output_hidden_states=all_layers)
        logits = loaded.model.lm_head(encoded.last_hidden_state)
    logits_np = logits.float().cpu().numpy()
    hidden_np = encoded.last_hidden_state.float().cpu().numpy()
    layers_np = [h.float().cpu().numpy() for h in encoded.hidden_states] if all_layers else []
    results = []
    for row, waveform in enumerate(waveforms):
        frames = frame_count(waveform.shape[0], loaded.window_samples, loaded.hop_samples)
        results.append(FrameOutputs(
            logits=logits_np[row, :frames].copy(), hidden=hidden_np[row, :frames].copy(),
            layers=tuple(layer[row, :frames].copy() for layer in layers_np)))
    return results

