"""Atomic file writes: a hidden temporary file in the target folder, then a rename."""
import os
import tempfile
from pathlib import Path


def atomic_write(path, write):
    """Call ``write(tmp_path)`` on a hidden temporary file next to ``path``, then rename it.

    Readers never see half a file, and Parquet readers skip the temporary (its name starts
    with a dot). Missing parent folders are created. Returns ``path`` as a ``Path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
