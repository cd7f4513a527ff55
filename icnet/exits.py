"""Exit codes and the one error path of every binary.

`run(main)` calls a binary's main under `icnet.interrupts.stop_on_signals` and turns what it
raises into one line on stderr and a documented exit code:

| code | meaning |
|---|---|
| 0 (`OK`) | done |
| 1 (`ERROR`) | failed while working: out of space, read-only or permission denied (the path and the reason), a diverged training, a runtime failure |
| 2 (`USAGE`) | refused before any work: a bad flag value, a missing or unreadable input file, an output that exists |
| 3 (`FLOOR_FAILED`) | an exported artifact is below its accuracy floor (the export is complete and its report marks it) |
| 75 (`INTERRUPTED`) | stopped by SIGINT/SIGTERM at a safe point; rerunning the same command resumes or restarts as the binary documents |

Library code raises `OptionError(option, message)` for a bad value of a named option; the
binary maps the option to its flag (`--option` unless told otherwise).
"""

from __future__ import annotations

import errno
import re
import sys
from collections.abc import Callable, Mapping

from absl import logging

from icnet.interrupts import Interrupted, stop_on_signals

OK, ERROR, USAGE, FLOOR_FAILED, INTERRUPTED = 0, 1, 2, 3, 75

# errno values that mean "the disk or the permissions", reported by path and reason.
IO_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
             errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
             errno.EPERM: "operation not permitted", errno.EIO: "input/output error"}
# The same conditions as TensorFlow reports them (its file system layer raises OpErrors).
_TF_IO_TEXTS = {"No space left on device": "no space left on device",
                "Read-only file system": "read-only file system",
                "Permission denied": "permission denied",
                "Disk quota exceeded": "disk quota exceeded"}


class OptionError(ValueError):
    """A bad value of a named option (a function parameter, a binary's flag)."""

    def __init__(self, option: str, message: str):
        self.option, self.message = option, message
        super().__init__(f"{option}: {message}")


class Failed(RuntimeError):
    """Work that failed for a reason its message states (e.g. a diverged training)."""


class FloorFailed(Exception):
    """Artifacts below their accuracy floors; the message is the table naming them."""


def describe_io_error(error: BaseException) -> str | None:
    """`<path>: <reason>` for out-of-space, read-only and permission errors, else None."""
    if isinstance(error, OSError) and error.errno in IO_ERRNOS:
        path = error.filename or "(unknown path)"
        return f"{path}: {IO_ERRNOS[error.errno]}"
    if type(error).__module__.startswith("tensorflow") and hasattr(error, "message"):
        text = " ".join(str(error.message).split())
        for needle, reason in _TF_IO_TEXTS.items():
            if needle in text:
                path = re.search(r"(?:^|\s)(/[^\s:;,'{}]+)", text)
                return f"{path.group(1) if path else '(path not reported)'}: {reason}"
        if type(error).__name__ == "ResourceExhaustedError":
            return f"{text[:300]} (resource exhausted)"
    return None


def run(main: Callable[[], int | None], flag_names: Mapping[str, str] | None = None) -> None:
    """Runs a binary's main and exits with its code (see the module docstring).

    Args:
      main: the binary's body; returns an exit code or None (OK).
      flag_names: option name -> flag name where they differ (`OptionError` messages).
    """
    flag_names = flag_names or {}
    try:
        with stop_on_signals():
            code = main()
    except Interrupted as e:
        logging.error("%s", e)
        print(f"stopped: {e}", file=sys.stderr)
        sys.exit(INTERRUPTED)
    except Failed as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(ERROR)
    except FloorFailed as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(FLOOR_FAILED)
    except OptionError as e:
        flag = flag_names.get(e.option, e.option)
        print(f"error: --{flag}: {e.message}", file=sys.stderr)
        sys.exit(USAGE)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(USAGE)
    except Exception as e:  # noqa: BLE001 - I/O errors get one line; the rest are bugs
        described = describe_io_error(e)
        if described is None:
            raise
        print(f"error: {described}", file=sys.stderr)
        sys.exit(ERROR)
    sys.exit(code or OK)
