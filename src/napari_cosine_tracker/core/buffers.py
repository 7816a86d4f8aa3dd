"""Label stacks that may not fit in memory: in memory when small, memory-mapped on disk when
large (a long movie's tracked labels, the correction widget's working copies), so memory
stays bounded whatever the movie's length. No torch here: the correction widget and the
editor use it without loading the network's libraries."""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np

__all__ = ["MEMORY_BUDGET_BYTES", "label_buffer", "copy_labels"]

#: Above this many bytes a session keeps its embeddings and tracked labels on disk (memory-
#: mapped or one file per frame in a temporary folder) instead of in memory, so a long movie
#: runs in bounded memory; small movies stay in memory (no files, a little faster).
MEMORY_BUDGET_BYTES = 256 * 2**20


def label_buffer(shape, directory=None, budget: int | None = None,
                 dtype=np.uint32) -> np.ndarray:
    """A zeroed ``(T, Y, X)`` label array (uint32 by default): in memory when it fits
    ``budget`` (default :data:`MEMORY_BUDGET_BYTES`, read at call time), else a
    memory-mapped file in ``directory`` (a new temporary folder by default), which napari
    shows and paints like any array while the operating system keeps only what is used."""
    shape = tuple(int(s) for s in shape)
    budget = MEMORY_BUDGET_BYTES if budget is None else budget
    dtype = np.dtype(dtype)
    if int(np.prod(shape)) * dtype.itemsize <= budget:
        return np.zeros(shape, dtype)
    own = directory is None
    directory = Path(tempfile.mkdtemp(prefix="nct-labels-")) if own else Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix="labels-", suffix=f".{dtype.str[1:]}", dir=directory)
    os.close(fd)
    out = np.memmap(path, dtype=dtype, mode="w+", shape=shape)
    if own:  # a long movie's labels are gigabytes: gone with the last array that uses them
        weakref.finalize(out, shutil.rmtree, directory, True)
    return out


def copy_labels(labels, directory=None, budget: int | None = None, dtype=None) -> np.ndarray:
    """A copy of a ``(T, Y, X)`` label stack made frame by frame into :func:`label_buffer`:
    a long movie's copy goes to disk instead of doubling the memory it takes."""
    dtype = np.dtype(dtype or getattr(labels, "dtype", np.uint32))
    out = label_buffer(labels.shape, directory, budget, dtype=dtype)
    for t in range(labels.shape[0]):
        out[t] = np.asarray(labels[t])
    return out
