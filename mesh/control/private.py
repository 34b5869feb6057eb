"""Owner-only files and directories on the control side: the CA's directory and key, the serving key, the
bootstrap-token records, the local runtime's state directories.

`write_file` replaces a file atomically (readers see the old or the new content) through a temporary file
created 0600, so a key is never readable by others, not even while it is being written. `ensure_private_dir`
makes a directory 0700, tightening one that an older version (or a umask) left looser.

Standard library only: the local supervisor imports it (through `mesh.control.tokens`). `mesh.proxy.tls`
keeps its own copy, since the proxy may not import the control plane.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

DIR_MODE = 0o700
KEY_MODE = 0o600


def ensure_private_dir(path: Path) -> None:
    """`path` exists (parents too) and only its owner may enter it: 0700, tightened if looser."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        os.chmod(path, DIR_MODE)


def write_file(path: Path, data: bytes, mode: int = KEY_MODE) -> None:
    """Replace `path` atomically with `data`, ending with `mode` (default 0600).

    The temporary file next to it is created 0600 by `mkstemp` and only given `mode` once the content is
    written; on any failure it is removed and `path` is left as it was.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            os.fchmod(handle.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
