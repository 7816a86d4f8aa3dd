"""Label stacks past the memory budget live in memory-mapped files that go with the arrays."""

from __future__ import annotations

import gc
import os

import numpy as np

from napari_cosine_tracker.core import buffers


def test_small_stacks_stay_in_memory_large_ones_on_disk_and_are_cleaned_up():
    small = buffers.label_buffer((2, 8, 8), budget=10**6)
    assert type(small) is np.ndarray and small.dtype == np.uint32 and not small.any()
    big = buffers.label_buffer((3, 64, 64), budget=0, dtype=np.uint16)
    assert isinstance(big, np.memmap) and big.dtype == np.uint16
    folder = os.path.dirname(big.filename)
    view = np.asarray(big)  # napari and the editor hold views, not the memmap itself
    del big
    gc.collect()
    assert os.path.isdir(folder)  # still in use through the view
    del view
    gc.collect()
    assert not os.path.exists(folder)  # a long movie's gigabytes do not pile up in /tmp


def test_copy_labels_copies_frame_by_frame_into_the_right_place(monkeypatch):
    labels = np.random.default_rng(0).integers(0, 9, (4, 16, 16)).astype(np.uint16)
    monkeypatch.setattr(buffers, "MEMORY_BUDGET_BYTES", 0)
    out = buffers.copy_labels(labels)
    assert isinstance(out, np.memmap) and out.dtype == np.uint16
    np.testing.assert_array_equal(out, labels)
    assert not np.shares_memory(out, labels)  # a copy: editing it leaves the original
