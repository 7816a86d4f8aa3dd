"""HDBSCAN's single-linkage tree, built in a child process.

hdbscan's Boruvka KD-tree (Cython) and fast_hdbscan (numba) hold the GIL for a whole tree
build, 0.1-1 s per frame pair. In a thread that freezes every other Python thread of the
process, napari's event loop included. A child process has its own GIL: the caller waits on a
pipe (GIL released) and may run the model on the next frame meanwhile.

The child is started with ``python -m napari_cosine_tracker.core.treeproc`` rather than
``multiprocessing``: spawn would re-import the user's ``__main__`` (a script without an
``if __name__ == "__main__"`` guard would run again) and fork is unsafe once torch's OpenMP
threads and Qt exist. Arrays cross the pipe as a JSON header plus raw bytes, never pickles.

Public API: :class:`TreeProcess`, :func:`shared_tree_process`.
"""

from __future__ import annotations

import atexit
import json
import os
import struct
import subprocess
import sys
import threading

import numpy as np

__all__ = ["TreeProcess", "TreeProcessError", "TreeProcessDied", "shared_tree_process"]


class TreeProcessError(RuntimeError):
    """The tree could not be built in the child process."""


class TreeProcessDied(TreeProcessError):
    """The child process could not be started or reached, or it stopped."""


def _write_msg(fh, header: dict, array: np.ndarray | None = None) -> None:
    if array is not None:
        array = np.ascontiguousarray(array)
        header = {**header, "dtype": array.dtype.str, "shape": list(array.shape)}
    raw = json.dumps(header).encode()
    fh.write(struct.pack("<I", len(raw)) + raw)
    if array is not None:
        fh.write(array.tobytes())
    fh.flush()


def _read_exact(fh, n: int) -> bytearray:
    buf = bytearray(n)  # writable: Cython code downstream wants writable memory views
    view, got = memoryview(buf), 0
    while got < n:
        k = fh.readinto(view[got:])
        if not k:
            raise EOFError("pipe closed")
        got += k
    return buf


def _read_msg(fh) -> tuple[dict, np.ndarray | None]:
    (n,) = struct.unpack("<I", _read_exact(fh, 4))
    header = json.loads(bytes(_read_exact(fh, n)))
    if "dtype" not in header:
        return header, None
    dtype, shape = np.dtype(header["dtype"]), tuple(header["shape"])
    size = int(np.prod(shape)) * dtype.itemsize
    return header, np.frombuffer(_read_exact(fh, size), dtype).reshape(shape)


class _Pending:
    """A tree being built; :meth:`result` waits for it."""

    def __init__(self, owner: "TreeProcess"):
        self._owner = owner
        self._value = None
        self._done = False

    def result(self) -> np.ndarray:
        if not self._done:
            self._owner._collect(self)
        return self._value


class TreeProcess:
    """A child process that builds single-linkage trees, one request at a time.

    Examples
    --------
    >>> tp = TreeProcess()                                   # doctest: +SKIP
    >>> pending = tp.submit(features, min_samples=8)         # returns at once
    >>> slt = pending.result()                               # (n-1, 4), scipy layout
    """

    def __init__(self):
        self._lock = threading.RLock()
        self._proc: subprocess.Popen | None = None
        self._pending: _Pending | None = None

    def _start(self):
        env = dict(os.environ)
        # One core for the tree, the rest stays with the model and the GUI.
        env.setdefault("NUMBA_NUM_THREADS", "1")
        env.setdefault("OMP_NUM_THREADS", "1")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "napari_cosine_tracker.core.treeproc"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, bufsize=0,
        )

    def submit(self, features: np.ndarray, min_samples: int, backend: str = "hdbscan") -> _Pending:
        """Start building the tree of ``features`` (n, k) float64; returns a pending result."""
        with self._lock:
            if self._pending is not None:  # an abandoned request: drain it first
                try:
                    self._pending.result()
                except TreeProcessError:
                    pass
            if self._proc is None or self._proc.poll() is not None:
                try:
                    self._start()
                except OSError as e:
                    raise TreeProcessDied(f"the clustering process could not be started ({e})") from e
            pending = _Pending(self)
            try:
                _write_msg(self._proc.stdin, {"min_samples": int(min_samples), "backend": backend},
                           np.asarray(features, np.float64))
            except (BrokenPipeError, OSError) as e:
                self._kill()
                raise TreeProcessDied(f"the clustering process could not be reached ({e})") from e
            self._pending = pending
            return pending

    def _collect(self, pending: _Pending):
        with self._lock:
            if pending._done:
                return
            try:
                header, array = _read_msg(self._proc.stdout)
            except (EOFError, OSError, ValueError) as e:
                self._kill()
                pending._done = True
                self._pending = None
                raise TreeProcessDied(f"the clustering process stopped ({e})") from e
            pending._done = True
            self._pending = None
            if "error" in header:
                raise TreeProcessError(f"clustering failed in the child process: {header['error']}")
            pending._value = array

    def build(self, features, min_samples, backend="hdbscan") -> np.ndarray:
        """Build a tree and wait for it; restarts the child once if it has died."""
        try:
            return self.submit(features, min_samples, backend).result()
        except TreeProcessDied:
            return self.submit(features, min_samples, backend).result()

    def _kill(self):
        if self._proc is not None:
            try:
                self._proc.kill()
                self._proc.wait(timeout=5)
            except Exception:
                pass
        self._proc = None

    def close(self) -> None:
        """Stop the child process."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                try:
                    self._proc.stdin.close()  # the child ends at end of input
                    self._proc.wait(timeout=5)
                except Exception:
                    self._kill()
            self._proc = None
            self._pending = None


_shared: TreeProcess | None = None
_shared_lock = threading.Lock()


def shared_tree_process() -> TreeProcess:
    """The process-wide :class:`TreeProcess` (started on first use, stopped at exit)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = TreeProcess()
            atexit.register(_shared.close)
        return _shared


def _serve(stdin, stdout) -> None:
    from .cluster import _single_linkage

    while True:
        try:
            header, features = _read_msg(stdin)
        except EOFError:
            return
        try:
            if header["backend"] not in ("hdbscan", "fast_hdbscan"):
                raise ValueError(f"unknown backend {header['backend']!r}")
            slt = _single_linkage(features, header["min_samples"], header["backend"])
            _write_msg(stdout, {}, slt)
        except Exception as e:  # report, keep serving
            _write_msg(stdout, {"error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    # The protocol owns the original stdout; anything a library prints goes to stderr.
    _out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    _serve(sys.stdin.buffer, _out)
