"""``keyless serve``: the options (options.py), resolved once into the runtime every API process runs with
(runtime.py), the sockets and servers of each port (listeners.py), and the process that holds the data dir,
starts the workers and announces the server in ``endpoints.json`` (supervisor.py)."""

from keyless.server.options import ServeOptions
from keyless.server.supervisor import run

__all__ = ["ServeOptions", "run"]
