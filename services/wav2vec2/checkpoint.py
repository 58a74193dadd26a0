"""A random-weight wav2vec2 CTC checkpoint, built locally, for machines without downloads.

``make_checkpoint(path, size)`` writes what ``from_pretrained`` reads for a
real checkpoint (config, weights, vocabulary, tokenizer and feature extractor
configs), plus ``grym_random_weights.json`` so the service can say plainly
that its transcriptions are noise.

- ``tiny``: hidden 64, 2 layers, 2 heads, a layer-norm feature encoder, so
  padded batches with an attention mask give the same results as single clips.
- ``base``: ``Wav2Vec2Config()`` defaults, the shape of wav2vec2-base-960h
  (94 M parameters, group-norm encoder, ~360 MB on disk).

Command line (from run.py): ``python run.py make-model PATH --size tiny``.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Sequence

import torch
from transformers import (Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor,
                          Wav2Vec2ForCTC, Wav2Vec2Processor)

from .model import quiet_transformers

RANDOM_WEIGHTS_MARKER = "grym_random_weights.json"
SIZES = ("tiny", "base")
SAMPLE_RATE = 16_000
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "|")  # <pad> doubles as the CTC blank
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ'"
# Spread of the random logits. Default init gives near-uniform logits, whose
# argmax flips under float noise; this makes the random model decisive.
LOGIT_STD = 4.0

_TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
             conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=16,
             feat_extract_norm="layer", do_stable_layer_norm=True)


def vocabulary() -> dict[str, int]:
    return {token: index for index, token in enumerate(SPECIAL_TOKENS + tuple(LETTERS))}


def model_config(size: str, **overrides: Any) -> Wav2Vec2Config:
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    shape = dict(_TINY) if size == "tiny" else {}
    shape.update(overrides)
    return Wav2Vec2Config(vocab_size=len(vocabulary()), pad_token_id=0, **shape)


def make_checkpoint(path: str | Path, size: str = "tiny", seed: int = 0,
                    **config_overrides: Any) -> Path:
    """Write a random-weight checkpoint to ``path``; ``config_overrides`` go to Wav2Vec2Config."""
    quiet_transformers()  # save_pretrained draws a progress bar otherwise
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    config = model_config(size, **config_overrides)
    with torch.random.fork_rng(devices=[]):  # seeded, without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = Wav2Vec2ForCTC(config)
        torch.nn.init.normal_(model.lm_head.weight, std=LOGIT_STD / math.sqrt(config.hidden_size))
    model.save_pretrained(folder)
    _processor(folder, config).save_pretrained(folder)
    (folder / RANDOM_WEIGHTS_MARKER).write_text(json.dumps({
        "random_weights": True, "size": size, "seed": seed,
        "note": "random weights: transcriptions are noise",
    }, indent=2) + "\n")
    return folder


def _processor(folder: Path, config: Wav2Vec2Config) -> Wav2Vec2Processor:
    vocab_file = folder / "vocab.json"
    vocab_file.write_text(json.dumps(vocabulary()))
    tokenizer = Wav2Vec2CTCTokenizer(str(vocab_file), unk_token="<unk>", pad_token="<pad>",
                                     bos_token="<s>", eos_token="</s>", word_delimiter_token="|")
    # Layer-norm encoders take an attention mask; group-norm ones were trained without.
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=True,
        return_attention_mask=config.feat_extract_norm == "layer")
    return Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make-model", description="Build a random-weight wav2vec2 CTC checkpoint.")
    parser.add_argument("path", help="folder to write the checkpoint to")
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    folder = make_checkpoint(args.path, args.size, args.seed)
    size_mb = sum(f.stat().st_size for f in folder.iterdir()) / 1e6
    print(f"wrote a random-weight {args.size} wav2vec2 checkpoint ({size_mb:.1f} MB) to {folder}")
    return 0
