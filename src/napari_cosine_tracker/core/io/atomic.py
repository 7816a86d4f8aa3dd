"""Atomic writing: a file or folder is built beside its target and then swapped in, so an
interrupted write leaves the old result or the new one, never half of either."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .movies import MovieError

# A temporary sibling untouched this long belongs to a killed writer, not a running one
# (a running export touches its folder with every frame it writes).
STALE_TMP_S = 600


def _clean_stale(parent: Path, name: str) -> None:
    """Delete what killed writers of ``parent/name`` left behind: ``.name.tmp-*`` folders,
    ``.name.*.tmp`` files and, once ``name`` exists again, ``.name.old-*`` leftovers."""
    import glob
    import time

    now, esc = time.time(), glob.escape(name)
    patterns = [f".{esc}.tmp-*", f".{esc}.*.tmp"]
    if (parent / name).exists():
        patterns.append(f".{esc}.old-*")
    for p in (p for pattern in patterns for p in parent.glob(pattern)):
        try:
            if now - p.stat().st_mtime >= STALE_TMP_S:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        except OSError:
            pass


def _tmp_sibling(out_dir: Path) -> Path:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(out_dir.parent, out_dir.name)
    return Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``, which
    the standard library does not wrap); False where the system cannot."""
    import ctypes
    import errno

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(tmp: Path, out_dir: Path):
    """Replace ``out_dir`` (a folder or a file) by ``tmp``; on failure the old one is kept,
    and it is deleted only once the new one is in place.

    Where the system can, the two are exchanged in one atomic step, so a kill at any moment
    leaves ``out_dir`` holding the old result or the new one; elsewhere two renames, with a
    moment between them where a kill leaves the old result aside (which reading the result
    then names)."""
    if out_dir.is_symlink() or out_dir.exists():
        if _exchange(tmp, out_dir):
            # ``tmp`` now holds the old result (or the link that stood there: only the link goes).
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            return
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
        old.rmdir()
        os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        if old is not None:
            os.replace(old, out_dir)
        raise
    if old is not None:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def _guard_overwrite(out_dir: Path, allowed: re.Pattern | None, what: str):
    """Refuse to replace a folder that holds anything but a previous output of this kind."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise MovieError(f"{out_dir}: exists and is not a folder; choose another output path")
    if allowed is None:
        return
    other = [p.name for p in out_dir.iterdir() if not allowed.match(p.name)]
    if other:
        raise MovieError(f"{out_dir}: folder holds other files ({', '.join(sorted(other)[:5])}) "
                         f"and does not look like a {what}; it would be replaced as a whole: "
                         "choose a new or empty folder")


@contextmanager
def atomic_file(path, mode: str = "wb", suffix: str = ".tmp"):
    """Write one file atomically: ``with atomic_file(path, "w") as f: ...`` writes a hidden
    temporary file beside ``path`` (``f.name``), flushed to disk, and renames it into place
    only when the block succeeds; on any error (disk full, a crash) ``path`` keeps its old
    content and no temporary file is left. The file gets the usual permissions (umask), not
    mkstemp's owner-only ones. ``suffix`` matters to writers that pick the format from it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
