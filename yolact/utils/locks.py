"""One owner per folder: a lock file naming its owner, and which leftovers are stale.

`FolderLock` writes ``<folder>/<name>`` with the owner's pid, host and start time and
holds it with ``flock`` while the owner runs. A second process is refused with the
owner's pid and host; the kernel drops the flock when its owner dies (even by SIGKILL),
so a lock file left by a dead run is detected, reported and taken over. The file is
removed on release (and the folder too when the lock created it and nothing else was
written), so a command refused later leaves the folder as it was.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time

# A filesystem without flock (some network mounts): the pid check decides alone.
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL)


def pid_running(pid: int) -> bool:
    """Whether process `pid` exists on this machine (signal 0: nothing is sent)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def this_host() -> str:
    return socket.gethostname()


class FolderLockedError(RuntimeError):
    """The folder is held by another live process (the message names it)."""


class FolderLock:
    """An exclusive lock on `folder`, held from `acquire` to `release` (or a `with` block).

    `what` names the folder in messages (``-weights 'runs/x'``); `log` receives the line
    saying a stale lock was taken over.
    """

    def __init__(self, folder: str, name: str = "train.lock", what: str | None = None,
                 log=print):
        self.folder, self.path = folder, os.path.join(folder, name)
        self.what = what or repr(folder)
        self.log = log
        self._fd = None
        self._created_folder = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

    def acquire(self) -> FolderLock:
        """Take the lock; FolderLockedError when a live process holds it."""
        self._created_folder = not os.path.isdir(self.folder)
        os.makedirs(self.folder, exist_ok=True)
        try:
            fd, previous = self._open_locked()
        except BaseException:
            self._remove_created_folder()
            raise
        owner = _parse(previous)
        if owner and (owner.get("pid"), owner.get("host")) != (os.getpid(), this_host()):
            self.log(f"Took over the lock of {self.what} ({self.path}) left by pid "
                     f"{owner.get('pid')} on host {owner.get('host')}, which is no longer "
                     f"running (a killed run)")
        record = {"pid": os.getpid(), "host": this_host(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd
        return self

    def _open_locked(self):
        """(fd holding the flock of the lock file at self.path, its previous content)."""
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._locked_error(_parse(self._read_owner())) from None
            except OSError as err:
                if err.errno not in _NO_FLOCK:
                    os.close(fd)
                    raise
                owner = _parse(_read_fd(fd))
                if owner and _alive(owner):
                    os.close(fd)
                    raise self._locked_error(owner) from None
                return fd, _read_fd(fd)
            try:  # the owner may have removed this file between our open and our flock
                current = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                current = False
            if current:
                return fd, _read_fd(fd)
            os.close(fd)

    def _read_owner(self, tries: int = 20) -> str:
        """The lock file's text; waits briefly for an owner that has not written it yet."""
        text = ""
        for _ in range(tries):
            try:
                with open(self.path) as f:
                    text = f.read()
            except FileNotFoundError:
                return ""
            if text.strip():
                return text
            time.sleep(0.05)
        return text

    def _locked_error(self, owner: dict | None) -> FolderLockedError:
        who = (f"pid {owner.get('pid')} on host {owner.get('host')}"
               + (f", since {owner['started']}" if owner.get("started") else "")
               if owner else "a process that has not written its pid yet")
        return FolderLockedError(
            f"{self.what} is in use by another run ({who}; lock file {self.path}): wait for "
            f"it to end, or use another folder")

    def release(self) -> None:
        """Remove the lock file and drop the lock (nothing when not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                os.remove(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)  # drops the flock
        self._remove_created_folder()

    def _remove_created_folder(self) -> None:
        if self._created_folder:
            try:
                os.rmdir(self.folder)  # only when empty: nothing else was written
            except OSError:
                pass


def _read_fd(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode("utf-8", errors="replace")


def _parse(text: str) -> dict | None:
    try:
        owner = json.loads(text)
    except ValueError:
        return None
    return owner if isinstance(owner, dict) else None


def _alive(owner: dict) -> bool:
    """Another host's owner cannot be checked from here: taken as alive."""
    if owner.get("host") != this_host():
        return True
    return owner.get("pid") != os.getpid() and pid_running(owner.get("pid"))
