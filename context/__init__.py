"""Shared context for model services: the functional core behind the ContextActor."""
from .adapters import ContextAdapter, GenerationAdapter, PassThroughAdapter, Wav2Vec2Adapter  # noqa: F401
from .backends import Backend, MemoryBackend, SQLiteBackend, open_backend  # noqa: F401
from .manager import ContextManager  # noqa: F401
from .settings import ContextSettings  # noqa: F401
