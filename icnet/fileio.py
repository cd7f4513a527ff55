"""Atomic file writes (a temp file in the target's directory, then one rename), the clean-up of
temp files a killed process left, and path helpers."""

from __future__ import annotations

import os
import re
import tempfile

# atomic_write_bytes' temp files: .<name>.<pid>.<random>.tmp
_TEMP = re.compile(r"\..+\.(?P<pid>\d+)\.[^.]+\.tmp")


def atomic_write_bytes(path: str, data: bytes, mode: int = 0o644) -> None:
    """Writes `data` to `path` so that readers see either the old file or the whole new one."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.{os.getpid()}.",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def remove_stale_temp_files(directory: str) -> list[str]:
    """Removes the temp files of `atomic_write_bytes` calls whose process no longer runs."""
    removed = []
    if not os.path.isdir(directory):
        return removed
    for name in os.listdir(directory):
        match = _TEMP.fullmatch(name)
        if match and not alive(int(match["pid"])):
            os.remove(os.path.join(directory, name))
            removed.append(name)
    return removed


def alive(pid: int) -> bool:
    """Whether process `pid` runs (this process counts)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holds(folder: str, path: str) -> bool:
    """Whether `path` is `folder` or lies inside it, after resolving symlinks."""
    folder, path = os.path.realpath(folder), os.path.realpath(path)
    return path == folder or path.startswith(folder + os.sep)
