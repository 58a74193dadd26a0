"""The Wav2Vec2 model service: speech to text, audio features and segment patterns.

Modules, one concern each:

- ``settings``   the service's validated settings
- ``audio``      WAV decoding, sample checks, band-limited resampling (numpy only)
- ``requests``   a Task's data and context -> one validated ``AudioRequest``
- ``model``      loading a checkpoint and the padded batch forward pass (torch)
- ``ctc``        greedy CTC decoding with confidences and word times
- ``patterns``   energy segments and change points from frame vectors (numpy only)
- ``analyses``   model outputs -> the result dict of each analysis
- ``service``    ``Wav2Vec2Service``, the ModelService the actor shell hosts
- ``checkpoint`` building a random-weight checkpoint to run without downloads
- ``timing``     bare-model forward timings for benchmarks

Nothing is imported here, so reading the settings does not import torch.
"""
import os

# OpenMP (libgomp, torch's CPU thread pool) reads this once, when torch is first
# imported; this package is imported before torch wherever the kind is loaded (a
# launcher validating its config, a host). By default each pool thread spins on
# after every parallel region: measured here, 5-9 ms of CPU burnt after each tiny
# forward pass, on a core the service's reply and the caller need on a 2-core
# machine. 20,000 spins left 0.07 ms and the same forward times (1 s and 10 s
# clips); 2,000 made forward passes slower. A value already set is kept.
os.environ.setdefault("GOMP_SPINCOUNT", "20000")
