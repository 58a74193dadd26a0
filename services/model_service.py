"""The ModelService interface: what a model service is, without any actor.

A service kind is a plain class. The ServiceActor (actors/service_actor.py)
hosts one instance in its own process, owns its mailbox and calls these
methods from a worker thread; the kind never sees a message. Kinds are
found through the ``grym.services`` entry point group (see ``registry.py``).
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping, Sequence

from messages.errors import InvalidTaskType
from messages.task import Task


@dataclasses.dataclass(frozen=True)
class NoSettings:
    """Settings of a kind that has none."""


Outcome = Any  # the task's result data, or an exception instance for that task alone


class ModelService:
    """Base of every service kind.

    Subclasses set ``kind``, ``task_types`` and ``Settings`` (a frozen
    dataclass validated in ``__post_init__``), and implement ``initialize``
    and ``execute``; a kind that can batch overrides ``execute_batch``.

    ``Settings`` holds the kind's own model knobs only. The runtime's keys of a
    service (queue, batching, deadline, memory, restart, eager, context: see
    ``supervisor.config.ServiceSpec``) belong to the service spec; a kind may
    give them defaults in ``runtime_defaults``, and gets the values it needs
    (``max_memory``) as arguments.
    """

    kind: ClassVar[str] = ""
    # The task types the kind serves: checked before a task is queued, and each
    # configured service of the kind is the default route for them.
    task_types: ClassVar[frozenset[str]] = frozenset()
    Settings: ClassVar[type] = NoSettings
    runtime_defaults: ClassVar[Mapping[str, Any]] = {}
    # Modules worth importing in the supervisor before it forks service
    # processes, so that a (re)started service does not pay for the import.
    preload_modules: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def requirements(cls, settings: Any) -> Mapping[str, Any]:
        """What a host must offer to run a service with ``settings``, as a ``requires``
        table (runtime.capabilities.REQUIREMENTS), beyond the service's own ``requires``:
        a kind on a CUDA device needs a GPU and the spawn start method. Default: nothing."""
        return {}

    def __init__(self, name: str, settings: Any, *, max_memory: int | None = None):
        self.name = name
        self.settings = settings
        self.max_memory = max_memory  # bytes of resident memory the service may use, or None
        self.stop_reason: str | None = None  # set by request_stop
        self._initialized = False

    # -- lifecycle -------------------------------------------------------
    def initialize(self) -> None:
        """Load what the service needs. Raise InitError (or anything) on failure."""
        self._initialized = True

    def is_initialized(self) -> bool:
        return self._initialized

    def shutdown(self) -> None:
        """Release models and other resources. Must be safe to call twice."""
        self._initialized = False

    def request_stop(self, reason: str) -> None:
        """End this service normally once the work already queued is answered (OTP's
        ``{stop, normal, ...}``): it takes no new tasks, ``shutdown`` runs, and its
        supervisor does not restart it if its restart type is ``transient``."""
        self.stop_reason = reason

    # -- work --------------------------------------------------------------
    def check_task(self, task: Task) -> None:
        """Cheap checks done before a task is queued; raise a GrymError to refuse it."""
        if self.task_types and task.type not in self.task_types:
            raise InvalidTaskType(
                f"service {self.name!r} ({self.kind}) does not handle task type {task.type!r}; "
                f"it handles {sorted(self.task_types)}", {"task_type": task.type})

    def execute(self, task: Task) -> Any:
        """Run one task and return its result data, or raise a GrymError."""
        raise NotImplementedError

    def execute_batch(self, tasks: Sequence[Task]) -> list[Outcome]:
        """Run several tasks; one outcome per task, in order.

        The default runs them one by one, so one failing task does not fail
        its neighbours. An exception that escapes fails the whole batch.
        """
        outcomes: list[Outcome] = []
        for task in tasks:
            try:
                outcomes.append(self.execute(task))
            except Exception as exc:  # reported per task by the actor
                outcomes.append(exc)
        return outcomes

    def warmup_inputs(self, max_batch_size: int) -> Sequence[Sequence[Task]]:
        """Batches to run once after ``initialize`` and before the service is marked
        online (and before a rolling update moves traffic to it), so that the first
        real task does not pay for the model's first passes (lazy allocations, kernel
        selection per shape). Their results are thrown away; a failing one fails the
        start. ``max_batch_size`` is the largest batch the service will be given.
        The default: none."""
        return ()

    def describe(self) -> dict[str, Any]:
        """Facts worth showing in status output (model name, device, ...)."""
        return {}
