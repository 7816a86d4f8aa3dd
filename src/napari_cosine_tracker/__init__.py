"""napari-cosine-tracker: cell segmentation and tracking with recurrent cosine embeddings.

The Qt-free core lives in :mod:`napari_cosine_tracker.core`; the napari front end in
:mod:`napari_cosine_tracker.plugin`. Importing this package imports neither napari nor Qt.
"""

import os

__version__ = "0.1.0"

# Torch's CPU allocator backs blocks of 2 MB and more with transparent huge pages when this is
# set before its first allocation: one page fault per 2 MB instead of per 4 kB where freed
# memory cannot be kept for reuse (core.devices.keep_freed_memory; in threads that already had
# their own heap, e.g. napari's workers). NCT_KEEP_FREED_MEMORY=0 leaves both off.
if os.environ.get("NCT_KEEP_FREED_MEMORY", "1") != "0":
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
