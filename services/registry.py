"""Service kinds by name, found through the ``grym.services`` entry point group.

A third-party package adds a kind by declaring, in its own pyproject::

    [project.entry-points."grym.services"]
    mymodel = "mypackage.service:MyModelService"

The built-in kinds are listed here too, so a source checkout that was not
installed still runs. A kind may also be named by its class's path,
``kind = "mypackage.service:MyModelService"``, without an entry point.

New code without a restart: every service process imports its kind's code
afresh from disk when it starts (``load_kind(kind, fresh=True)``): the kind's
package (the entry point's top-level package; for a built-in kind its own module
or subpackage of ``services``) is dropped from ``sys.modules`` and imported
again. A service is forked from the supervisor, so without this it would run
whatever version the supervisor imported when the runtime started; a rolling
update (``run.py apply`` with a new ``version``) then starts processes that run
the code as it is now. Why not the spawn start method for that child: Thespian's
start method is one for the whole actor system, and a spawned child pays for
importing torch and transformers again (seconds); the fresh import re-runs only
the kind's own modules (~30 ms for wav2vec2) and keeps the libraries the
supervisor preloaded. The supervisor itself keeps the code it started with for
validating configs: a new version that adds settings keys needs a runtime restart.
"""
from __future__ import annotations

import importlib
import sys
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


def kind_package(module_name: str) -> str:
    """The modules that are a kind's own code: its top-level package, or for a kind
    inside this runtime's ``services`` package, its module or subpackage there."""
    parts = module_name.split(".")
    return ".".join(parts[:2]) if parts[0] == __name__.partition(".")[0] else parts[0]


def forget_modules(package: str) -> None:
    """Drop ``package`` and everything under it from ``sys.modules``, so that the next
    import reads it from disk."""
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[name]
    importlib.invalidate_caches()


def load_kind(kind: str, fresh: bool = False) -> type[ModelService]:
    """The kind's class; ``fresh``: its package imported again from disk (see above)."""
    targets = kind_targets()
    if kind not in targets and ":" not in kind:
        raise ConfigError(f"kind: unknown service kind {kind!r} (known: {', '.join(sorted(targets))}"
                          "; or name a class as 'package.module:Class')", {"key": "kind"})
    target = targets.get(kind, kind)
    module_name, _, attr = target.partition(":")
    try:
        if fresh:
            forget_modules(kind_package(module_name))
        cls = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # noqa: BLE001 - ImportError, a SyntaxError in new code, ...
        raise ConfigError(f"kind: service kind {kind!r} could not be loaded from "
                          f"{target!r}: {exc}", {"key": "kind"}) from None
    if not (isinstance(cls, type) and issubclass(cls, ModelService)):
        raise ConfigError(f"kind: {target!r} is not a ModelService subclass", {"key": "kind"})
    return cls
