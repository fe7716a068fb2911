"""File helpers: atomic writes (a hidden temporary file in the target folder, then a
rename) and content hashes."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from .errors import SpecblurError


#: Temporary files are ``.<name>.<pid>.<random>.tmp``: the pid says whose they are.
TEMPORARY = re.compile(r"\..+\.(\d+)\.[^./]+\.tmp")


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` on a hidden temporary file next to ``path``, then rename it.

    Readers never see half a file, and Parquet readers skip the temporary (its name starts
    with a dot). The file is flushed to disk before the rename, so a crash leaves the old
    file or the new one. Missing parent folders are created. Returns ``path`` as a ``Path``.

    An OSError that names no file, or only the temporary (a full disk: pyarrow's errors
    name none), is raised again naming ``path``, with its errno and the system's message.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp",
                                   dir=path.parent)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o644)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno and (
                exc.filename is None or
                os.path.basename(str(exc.filename)).startswith(f".{path.name}.")):
            raise OSError(exc.errno, os.strerror(exc.errno), str(path)) from exc
        raise
    return path


def write_denied(folder: str | os.PathLike) -> OSError | None:
    """The error that stops this process from making files in ``folder``, or None.

    Tries to create (and removes) a temporary file there: a read-only filesystem (EROFS)
    or folder (EACCES, EPERM) gives that error, naming ``folder``. Other errors are raised.
    """
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".probe.{os.getpid()}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return OSError(exc.errno, os.strerror(exc.errno), str(folder))
        raise
    os.close(fd)
    os.unlink(tmp)
    return None


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


def remove_dead_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of :func:`atomic_write` whose writer has died.

    Only names of exactly that form are touched, and only when their process is gone: a
    concurrent writer's temporaries and a user's own ``.tmp`` files are left alone.
    """
    removed = []
    for tmp in Path(folder).rglob(".*.tmp"):
        match = TEMPORARY.fullmatch(tmp.name)
        if match and not _alive(int(match.group(1))):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (killed, not yet reaped) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (not Linux), or it just ended
        return True


def exit_with_parent(parent: int, interval: float = 0.5) -> threading.Thread:
    """In a worker process: exit as soon as ``parent`` (the pid that started it) has died.

    A pool worker whose parent was killed (``kill -9``) would otherwise finish its task
    and then wait for the next one for ever. A daemon thread watches the parent's pid;
    the pid is passed in, so a worker that starts after its parent died exits at once.
    """
    def watch():
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, *, shared: bool = False, wait: bool = True,
                note: Callable[[str], None] | None = None):
    """An advisory lock (``flock``) on ``<folder>/.specblur.lock`` for the block.

    The kernel releases it when its process dies, so a ``kill -9`` leaves no stale lock.
    ``shared`` locks (readers) coexist; an exclusive one (a sweep) waits for every other.
    Yields True if the lock was taken; with ``wait=False`` it may yield False at once. On
    a filesystem without ``flock`` (ENOLCK) it yields True unlocked, after telling ``note``.
    ``note`` is told once when the lock is held by another process.
    """
    import fcntl

    path = Path(folder) / ".specblur.lock"
    with open(path, "a+") as fh:
        kind = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fh, kind | fcntl.LOCK_NB)
        except OSError as exc:
            if not isinstance(exc, BlockingIOError):  # ENOLCK: a filesystem without flock
                if note:
                    note(f"cannot lock {folder} ({exc.strerror}); going on without the lock")
                yield True
                return
            if note:
                note(f"another specblur process is using {folder}"
                     + ("; waiting for it" if wait else ""))
            if not wait:
                yield False
                return
            fcntl.flock(fh, kind)
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
