"""The host's background threads (health watcher, route feed, context copy, outbox):
each a daemon thread running ``_run`` until ``stop()``, which it checks through
``self._stop``."""
from __future__ import annotations

import threading

JOIN_S = 2.0   # what stop() gives the thread to end


class Background:
    def _start(self, name: str) -> None:
        """Call last in ``__init__``: the thread may read any attribute set before."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(JOIN_S)
