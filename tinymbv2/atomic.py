"""Writing a file all at once or not at all.

A file written in place and interrupted (a killed run, a full disk, an exception in the
middle) is left half-written: a checkpoint that no longer loads, an ONNX file that no
longer parses, where a good one was. Here the bytes go into a temporary file in the same
folder, which is flushed and synced to the disk and only then renamed over the target
(``os.replace``, atomic on POSIX and Windows within one file system): a reader sees the old
file or the new one, never a mixture. On any error the temporary is removed and the target
is as it was. The temporary is named ``<name>.<random>.tmp`` next to the target (the
checkpoints' clean-up of stale temporaries knows the pattern).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path, write) -> Path:
    """Create or replace ``path`` with what ``write`` writes, atomically (see the module).

    Args:
        path: The file; its folder must exist.
        write: ``write(f)`` writes the contents into the binary file object ``f``.

    Returns:
        ``path``, as a Path.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
