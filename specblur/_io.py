"""File helpers: atomic writes (a hidden temporary file in the target folder, then a
rename) and content hashes."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable

from .errors import SpecblurError


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
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


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes; a SpecblurError naming the file if it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise SpecblurError(f"cannot read input file {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()
