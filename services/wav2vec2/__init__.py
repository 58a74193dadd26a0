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
