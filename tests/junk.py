"""Generated bad input: messages built the way a hostile or broken pickle would build them.

Used by the chaos suite against a running system and by the shell tests
against one actor in this process: either way, junk must get a typed refusal,
never a crashed handler (EXECUTION_ERROR) or a dead actor.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import strategies as st

from messages.base import Message
from messages.context import QueryContext, StoreContext
from messages.system import ExecuteTask, GetService, ShutdownSystem, SubscribeHealth
from messages.task import Task


def forge(cls, **fields):
    """Build a message the way a hostile pickle would: no __init__, no checks."""
    obj = object.__new__(cls)
    for f in dataclasses.fields(cls):
        object.__setattr__(obj, f.name, fields.get(f.name))
    return obj


junk_values = st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20),
                        st.binary(max_size=20), st.lists(st.integers(), max_size=3),
                        st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))


def message_classes() -> list[type]:
    """Every message class the runtime defines (imported, so that all are registered)."""
    import messages.context, messages.service, messages.system  # noqa: E401,F401
    found, todo = [], [Message]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        # ShutdownSystem is a real command anyone on the machine may give (run.py stop).
        if cls not in (Message, ShutdownSystem) and cls.__module__.startswith("messages."):
            found.append(cls)
    return sorted(found, key=lambda c: c.__name__)


def _forged(cls: type) -> st.SearchStrategy:
    names = [f.name for f in dataclasses.fields(cls)]
    return st.fixed_dictionaries({n: junk_values for n in names}).map(lambda d: forge(cls, **d))


forged = st.one_of(
    st.builds(lambda v, p, t: forge(Task, id=v, type=t, priority=p, metadata=v),
              junk_values, junk_values, junk_values),
    st.builds(lambda v: forge(ExecuteTask, task=v, service=v), junk_values),
    st.builds(lambda v: forge(StoreContext, item=v), junk_values),
    st.builds(lambda v: forge(QueryContext, filter=v), junk_values),
    st.builds(lambda v: forge(GetService, name=v, initialize=v), junk_values),
    st.builds(lambda v: forge(SubscribeHealth, kinds=v, since=v), junk_values),
    st.one_of([_forged(cls) for cls in message_classes()]),
    junk_values,
)


def every_message_forged() -> list[Any]:
    """Each message class with all its fields None, then all an (unhashable) empty list:
    a fixed sweep beside the random ``forged``, so no class is left out by chance."""
    return [forge(cls, **{f.name: value for f in dataclasses.fields(cls)})
            for value in (None, []) for cls in message_classes()]
