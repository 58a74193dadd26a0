"""What every process of the runtime sets up before it opens a socket or logs a line.

The host, the launcher, the admin and every actor process import this package
(``host``, ``supervisor`` and ``actors`` do it in their ``__init__``). Settings
travel in environment variables, so a process started with spawn
configures itself the same way as a forked one.
"""
from . import frames, logs, network  # noqa: F401 - applied on import
