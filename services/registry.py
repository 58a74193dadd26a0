"""Service kinds by name, found through the ``grym.services`` entry point group.

A third-party package adds a kind by declaring, in its own pyproject::

    [project.entry-points."grym.services"]
    mymodel = "mypackage.service:MyModelService"

The built-in kinds are listed here too, so a source checkout that was not
installed still runs.
"""
from __future__ import annotations

import importlib
from functools import lru_cache
from importlib.metadata import entry_points

from messages.errors import ConfigError

from .model_service import ModelService

GROUP = "grym.services"
BUILTIN = {
    "echo": "services.echo:EchoService",
    "wav2vec2": "services.wav2vec2.service:Wav2Vec2Service",
}


@lru_cache(maxsize=1)
def kind_targets() -> dict[str, str]:
    targets = dict(BUILTIN)
    targets.update({ep.name: ep.value for ep in entry_points(group=GROUP)})
    return targets


def load_kind(kind: str) -> type[ModelService]:
    targets = kind_targets()
    if kind not in targets:
        raise ConfigError(f"kind: unknown service kind {kind!r} (known: {', '.join(sorted(targets))})",
                          {"key": "kind"})
    module_name, _, attr = targets[kind].partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"kind: service kind {kind!r} could not be loaded from "
                          f"{targets[kind]!r}: {exc}", {"key": "kind"}) from None
    if not (isinstance(cls, type) and issubclass(cls, ModelService)):
        raise ConfigError(f"kind: {targets[kind]!r} is not a ModelService subclass", {"key": "kind"})
    return cls
