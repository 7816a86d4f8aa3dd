"""Hand correction of tracking results: one model for labels + lineage, with undo/redo.

:class:`TrackEditor` owns a tracked label stack ``(T, Y, X)`` (pixel value == track id) and
its lineage (``int64 (N, 4)``: ``id, first, last, parent``) and keeps them consistent after
every edit, following the Cell Tracking Challenge (CTC) conventions:

* a track occupies every frame from ``first`` to ``last`` and no other frame;
* a parent ends before its children start (``parent.last < child.first``); a division has
  ``parent.last + 1 == child.first``, a larger distance is a CTC gap link.

Every edit is an :class:`Action` (command pattern). The first :meth:`Action.apply` runs the
edit inside a transaction and records a compact :class:`Diff` -- for each changed frame
only the bounding box of the changed pixels, before and after, plus the lineage rows that
changed. Undo and redo replay that diff, so they are exact and cost in proportion to the
edit, not to the movie. Edits that would break the CTC rules are repaired inside the same
action (a track that gets a hole is split, the later piece linked to the earlier as a gap
link; a parent link that became impossible is cleared), so undo also reverts the repair.

Several actions can be made one undo step (:meth:`TrackEditor.group`), and free pixel edits
(a napari brush or fill stroke, :meth:`TrackEditor.edit_pixels`) go through the same path.
Listeners (plain callables) receive an :class:`EditEvent` with the changed frames and track
ids after every do/undo/redo, so a viewer can refresh only what changed.

A project is a folder beside the movie: ``base-<uid>.npz`` holds the labels and lineage the
history starts from (written once), ``state.npz`` both history stacks as diffs plus a JSON
header (rewritten on every save, cheap). Both are read with ``allow_pickle=False``; each is
written to a temporary file in the folder and renamed over the old one, and the new base is
written before the state that names it, so a crash at any point leaves a loadable project.

Modules
    ``checks`` (the CTC rules), ``diff`` (diffs, events, the transaction), ``actions`` (every
    edit), ``editor`` (:class:`TrackEditor`), ``project`` (project folders, autosave places).
    Everything public is importable from ``napari_cosine_tracker.core.edit``.
"""

from __future__ import annotations

from ..io.lineage import lineage_from_labels  # the one lineage reader, re-exported
from .actions import (
    Action,
    DeleteCell,
    DeleteTrack,
    EditPixels,
    GroupAction,
    LinkTracks,
    MergeCells,
    PaintCell,
    ReassignTrack,
    SetParent,
    SplitCell,
    SwapTracks,
)
from .checks import check_consistency
from .diff import Candidate, Diff, EditEvent
from .editor import TrackEditor
from .project import (
    AUTOSAVE_ENV,
    PROJECT_FORMAT,
    PROJECT_KEY,
    PROJECT_SUFFIX,
    PROJECT_VERSION,
    autosave_project_path,
    autosave_root,
    data_fingerprint,
    default_project_path,
    is_project,
)

__all__ = [
    "Action",
    "Candidate",
    "Diff",
    "EditEvent",
    "TrackEditor",
    "check_consistency",
    "default_project_path",
    "lineage_from_labels",
    "is_project",
    "autosave_root",
    "autosave_project_path",
    "data_fingerprint",
    "AUTOSAVE_ENV",
    "PROJECT_FORMAT",
    "PROJECT_VERSION",
    "PROJECT_SUFFIX",
    "PROJECT_KEY",
    # the edits, each undoable (TrackEditor's methods make them)
    "DeleteCell",
    "DeleteTrack",
    "EditPixels",
    "GroupAction",
    "LinkTracks",
    "MergeCells",
    "PaintCell",
    "ReassignTrack",
    "SetParent",
    "SplitCell",
    "SwapTracks",
]
