"""Advisory file locks (``flock``) that keep two v60k processes out of one work dir or one corpus folder.

    with RunLock(workdir.lock_path):             # WorkDirBusy when another process holds it
        ...

A second lock on the same file fails even in the same process, unless it is taken ``reentrant=True``: then a
thread that already holds it goes on (a run that ends by writing its shards holds the work dir's lock).
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from pathlib import Path

from v60k.core.errors import WorkDirError

_READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)


class Busy(WorkDirError):
    """Another process holds the lock."""


class WorkDirBusy(Busy):
    """Another run holds this work dir."""


class FolderBusy(Busy):
    """Another process is writing this corpus folder."""


class FileLock:
    """An exclusive, non-blocking ``flock`` on ``path`` (a file, created if needed, or a folder); ``busy`` is
    raised when another holder has it.

    ``required=False``: where the lock file cannot be created (a read-only mount, which nobody can be writing
    to through this machine), go on without it.
    """

    _held = threading.local()

    def __init__(self, path: Path, busy: type[Busy], message: str, required: bool = True,
                 reentrant: bool = False):
        self.path = Path(path)
        self.reentrant = reentrant
        self.busy = busy
        self.message = message
        self.required = required
        self.fd: int | None = None
        self.reentered = False

    def _depths(self) -> dict[Path, int]:
        if not hasattr(self._held, "depths"):
            self._held.depths = {}
        return self._held.depths

    def __enter__(self) -> FileLock:
        depths = self._depths()
        if self.reentrant and depths.get(self.path):
            depths[self.path] += 1
            self.reentered = True
            return self
        folder = self.path.is_dir()
        try:  # a folder is locked through itself: nothing is added to it
            self.fd = os.open(self.path, os.O_RDONLY if folder else os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if not self.required and exc.errno in _READ_ONLY_ERRNOS:
                return self
            raise
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self.fd)
            self.fd = None
            raise self.busy(self.message) from exc
        if not folder:
            os.ftruncate(self.fd, 0)
            os.write(self.fd, str(os.getpid()).encode())
        depths[self.path] = 1
        return self

    def __exit__(self, *exc: object) -> None:
        depths = self._depths()
        if self.reentered:
            depths[self.path] -= 1
            return
        if self.fd is None:
            return
        depths.pop(self.path, None)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


class RunLock(FileLock):
    """The work dir's lock (``<workdir>/.run.lock``): one run, retry or shard at a time."""

    def __init__(self, path: Path, required: bool = True, reentrant: bool = False):
        super().__init__(path, WorkDirBusy, f"another v60k run is using {Path(path).parent}", required, reentrant)
