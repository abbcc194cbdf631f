"""Files that hold secrets (credentials, private keys, the master key): mode 0600, written whole.

``os.open(path, O_CREAT | O_TRUNC, 0o600)`` keeps the mode of a file already at ``path`` (a 0644 file stays
readable by everyone) and leaves a half-written file behind a crash. Every writer of a secret goes through
``write_private`` instead."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_private(path: Path | str, data: bytes | str, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path``, readable and writable by its owner only, atomically.

    A temporary file is created with mode 0600 in the same directory (``mkstemp``: whatever the umask), filled,
    synced, then renamed over ``path``: readers see the old file or the whole new one, never another mode, and a
    symlink at ``path`` is replaced rather than written through. With ``exclusive`` an existing ``path`` is left
    as it is and ``FileExistsError`` raised (a hard link, which fails if the name exists)."""
    target = Path(path)
    content = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            os.link(tmp, target)
            os.unlink(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
