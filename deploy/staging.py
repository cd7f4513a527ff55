"""Atomic exports: everything is written into a staging directory beside the targets, then
renamed into place.

`Staging(export_dir, targets, overwrite)` refuses up front when a target exists (unless
`overwrite`), creates `export_dir/.staging-<pid>-<random>/`, and `publish()` renames each staged
target into place (a directory, e.g. a SavedModel version, appears whole or not at all). On an
exception the staging directory is removed; a killed process leaves only its hidden staging
directory, which the next export removes once its process is gone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence

from absl import logging

STAGING_PREFIX = ".staging-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(export_dir: str) -> list[str]:
    """Removes staging directories left by export processes that no longer run."""
    removed = []
    if not os.path.isdir(export_dir):
        return removed
    for name in os.listdir(export_dir):
        if not name.startswith(STAGING_PREFIX):
            continue
        try:
            pid = int(name[len(STAGING_PREFIX):].split("-")[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(os.path.join(export_dir, name), ignore_errors=True)
            removed.append(name)
    if removed:
        logging.info("removed %d stale staging dir(s) of killed exports: %s", len(removed),
                     ", ".join(removed))
    return removed


class Staging:
    """A staging directory for `targets` (paths relative to `export_dir`).

    Raises (on construction):
      FileExistsError: some target exists and not `overwrite`, naming them.
    """

    def __init__(self, export_dir: str, targets: Sequence[str], overwrite: bool = False):
        self.export_dir = os.path.abspath(export_dir)
        self.targets = list(dict.fromkeys(targets))
        self.overwrite = overwrite
        existing = [t for t in self.targets if os.path.lexists(self.final(t))]
        if existing and not overwrite:
            raise FileExistsError(
                f"{self.export_dir} already holds {', '.join(existing)}; pass --overwrite to "
                f"replace them, or choose another --export_dir")
        os.makedirs(self.export_dir, exist_ok=True)
        remove_stale(self.export_dir)
        self.root = tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-",
                                     dir=self.export_dir)
        self.published = False
        self.keep_root = False  # set when a failed publish could not put everything back

    def path(self, relative: str) -> str:
        """Where to write `relative` while staging (its parent directory is created)."""
        path = os.path.join(self.root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def final(self, relative: str) -> str:
        return os.path.join(self.export_dir, relative)

    def publish(self) -> list[str]:
        """Renames every staged target into place, in the order given; returns final paths.

        A failure puts back what was already published and replaced and removes the directories
        it created, so the export directory is left as it was before.

        Raises:
          FileNotFoundError: a target was never written.
          FileExistsError: a target appeared meanwhile and not `overwrite`.
        """
        missing = [t for t in self.targets if not os.path.lexists(os.path.join(self.root, t))]
        if missing:
            raise FileNotFoundError(f"export incomplete: {', '.join(missing)} not written")
        trash = os.path.join(self.root, ".replaced")
        moves = []  # (from, to) renames done so far, undone in reverse on failure
        created = self._missing_parents()
        try:
            for target in self.targets:
                final = self.final(target)
                os.makedirs(os.path.dirname(final), exist_ok=True)
                if os.path.lexists(final):
                    if not self.overwrite:
                        raise FileExistsError(f"{final} appeared during the export; not "
                                              f"replacing it")
                    old = os.path.join(trash, target)
                    os.makedirs(os.path.dirname(old), exist_ok=True)
                    os.rename(final, old)
                    moves.append((final, old))
                os.rename(os.path.join(self.root, target), final)
                moves.append((os.path.join(self.root, target), final))
        except BaseException:
            self._undo(moves, created)
            raise
        published = [self.final(t) for t in self.targets]
        self.published = True
        shutil.rmtree(self.root, ignore_errors=True)
        return published

    def _missing_parents(self) -> list[str]:
        """The directories between export_dir and the targets that do not exist yet."""
        missing = set()
        for target in self.targets:
            parent = os.path.dirname(self.final(target))
            while parent != self.export_dir and not os.path.isdir(parent):
                missing.add(parent)
                parent = os.path.dirname(parent)
        return sorted(missing, key=len, reverse=True)

    def _undo(self, moves: list[tuple[str, str]], created: list[str]) -> None:
        """Reverses `moves` and removes the `created` directories, trying every step (a step
        that fails is logged, and keeps the staging directory so nothing in it is deleted)."""
        for source, destination in reversed(moves):
            try:
                os.rename(destination, source)
            except OSError as e:
                logging.error("could not move %s back to %s: %s; the staging directory %s "
                              "is kept: move it back by hand before the next export",
                              destination, source, e, self.root)
                self.keep_root = True
        for directory in created:
            try:
                os.rmdir(directory)
            except OSError:
                pass  # not empty: something else is there now

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if not self.published and not self.keep_root:
            self.discard()
