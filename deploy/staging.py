"""Crash-consistent output directories: built complete beside the target, switched in at once.

`Staging(target, overwrite)` stages a whole new version of the directory `target` in
`<parent>/.<name>.staging-<pid>-<random>/` (beside the target, never inside it, so a server
watching the target never sees it). `publish()` makes it the target in one step:

- no target yet: one `renameat2(RENAME_NOREPLACE)`;
- a target to replace: one `renameat2(RENAME_EXCHANGE)` swaps the two directories atomically,
  then the old one (now at the staging path) is deleted.

So after a crash at any moment the target is the old directory or the new one, never a mix.
Where the file system cannot exchange (no renameat2), publishing falls back to two renames
(the old target to `.<name>.previous-<pid>-<random>`, then the staging dir to the target), and
`recover()`, which every Staging runs first, puts a previous directory back if a crash came
between them. `recover()` also removes staging and previous directories of processes that
no longer run. Files of the old target that the new one keeps (e.g. other TF Serving versions)
are hard-linked into the staging dir by `carry()`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
import shutil
import signal
import tempfile
from collections.abc import Callable

from absl import logging

from icnet.fileio import alive, remove_stale_temp_files

# A test hook: kill this process at the Nth publish step (fault-injection tests).
KILL_AT_STEP_ENV = "ICNET_KILL_AT_PUBLISH_STEP"
_AT_FDCWD = -100
_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2
_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>staging|previous)-(?P<pid>\d+)-[^.]+$")


def _step(number: int) -> None:
    if os.environ.get(KILL_AT_STEP_ENV) == str(number):
        os.kill(os.getpid(), signal.SIGKILL)


def _renameat2(source: str, destination: str, flag: int) -> None:
    """Linux renameat2(2).

    Raises:
      OSError: its errno (ENOSYS or EINVAL where the system or file system lacks it).
    """
    function = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if function is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available", source)
    if function(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(destination), flag):
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), source, None, destination)


def _fsync_tree(root: str) -> None:
    """Flushes every file and directory under `root` to disk."""
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
        _fsync_dir(directory)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def recover(target: str) -> None:
    """Finishes what an interrupted publish of `target` left.

    A previous directory whose publish was cut off before the new one arrived is renamed back
    to `target` first; then every staging and previous directory of `target` whose process no
    longer runs is removed, and so are the temp files of killed atomic writes beside it.
    """
    target = os.path.abspath(target)
    parent, name = os.path.split(target)
    if not os.path.isdir(parent):
        return
    leftovers = []
    for entry in os.listdir(parent):
        match = _LEFTOVER.fullmatch(entry)
        if match and match["name"] == name and not alive(int(match["pid"])):
            leftovers.append((match["kind"], os.path.join(parent, entry)))
    previous = [path for kind, path in leftovers if kind == "previous"]
    if previous and not os.path.lexists(target):
        os.rename(previous[0], target)
        logging.warning("restored %s from %s: a publish was interrupted before the new "
                        "version arrived", target, previous[0])
        leftovers.remove(("previous", previous[0]))
    for _, path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
        logging.info("removed %s, left by a run that was killed", path)
    remove_stale_temp_files(parent)


class Staging:
    """A complete new version of the directory `target`, staged beside it.

    Args:
      target: the directory to create or replace.
      overwrite: replace an existing, non-empty `target`.
      replaceable: with `overwrite`, returns why an existing target must not be replaced
        (e.g. it is not an export), or None.

    Raises (on construction):
      FileExistsError: `target` exists, is not empty, and not `overwrite`.
      ValueError: `target` is a file, a mount point, or not `replaceable`.
    """

    def __init__(self, target: str, overwrite: bool = False,
                 replaceable: Callable[[str], str | None] | None = None):
        self.target = os.path.realpath(target)
        self.overwrite, self.replaceable = overwrite, replaceable
        parent, name = os.path.split(self.target)
        os.makedirs(parent, exist_ok=True)
        recover(self.target)
        self._check_target()
        self.root = tempfile.mkdtemp(prefix=f".{name}.staging-{os.getpid()}-", dir=parent)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.root, 0o777 & ~umask)  # mkdtemp's 0700 would become the target's mode
        self.published = False

    def _check_target(self) -> None:
        if not os.path.lexists(self.target):
            return
        if not os.path.isdir(self.target):
            raise ValueError(f"{self.target} exists and is not a directory")
        if os.path.ismount(self.target):
            raise ValueError(f"{self.target} is a mount point, which cannot be replaced in one "
                             f"step; write into a directory inside it")
        if not os.listdir(self.target):
            return
        if not self.overwrite:
            raise FileExistsError(f"{self.target} exists and is not empty; pass --overwrite to "
                                  f"replace it, or choose another directory")
        problem = self.replaceable(self.target) if self.replaceable else None
        if problem:
            raise ValueError(f"{self.target}: {problem}; not replacing it")

    def path(self, relative: str) -> str:
        """Where to write `relative` while staging (its parent directory is created)."""
        path = os.path.join(self.root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def carry(self, relative: str) -> None:
        """Keeps `relative` of the current target in the new version (hard links)."""
        source = os.path.join(self.target, relative)
        if os.path.isdir(source) and not os.path.islink(source):
            shutil.copytree(source, self.path(relative), symlinks=True,
                            copy_function=_link_or_copy)

    def publish(self) -> None:
        """Makes the staged directory the target, in one step (see the module docstring).

        Raises:
          FileExistsError: the target appeared meanwhile and not `overwrite`.
        """
        _step(1)
        _fsync_tree(self.root)
        _step(2)
        try:
            _renameat2(self.root, self.target, _RENAME_NOREPLACE)
            replaced = None
        except OSError as e:
            if e.errno in (errno.ENOSYS, errno.EINVAL):
                replaced = self._publish_in_two_renames()
            elif e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                replaced = self._exchange()
            else:
                raise
        _step(3)
        _fsync_dir(os.path.dirname(self.target))
        self.published = True
        if replaced:
            shutil.rmtree(replaced, ignore_errors=True)
        _step(4)

    def _exchange(self) -> str:
        """Swaps the staged directory with an existing target; returns where the old one is."""
        self._check_target()  # it appeared during the work, or it is the one checked before
        try:
            _renameat2(self.root, self.target, _RENAME_EXCHANGE)
        except OSError as e:
            if e.errno not in (errno.ENOSYS, errno.EINVAL):
                raise
            return self._publish_in_two_renames()
        return self.root

    def _publish_in_two_renames(self) -> str | None:
        """The fallback without renameat2: old target aside, staged dir in (see recover)."""
        previous = None
        if os.path.lexists(self.target):
            self._check_target()
            parent, name = os.path.split(self.target)
            previous = os.path.join(parent, f".{name}.previous-{os.getpid()}-"
                                            f"{secrets.token_hex(4)}")
            os.rename(self.target, previous)
            _step(5)
        os.rename(self.root, self.target)
        return previous

    def discard(self) -> None:
        if not self.published:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.discard()
