"""What a click or shortcut in the correction view means, as rules on the track editor.

The views (the napari correction widget, or a script) hold a selection -- the *primary* track
(click) and an optional *secondary* one (shift+click) -- and the frame shown. A user action
names what to do with them; :func:`perform` decides which editor action that is (swap or
reassign, which track is the mother, where a cut goes), runs it, and returns the selection
that follows. Views only map keys and buttons to :data:`ACTIONS` and draw the result; the
editor's events (:meth:`~.edit.TrackEditor.connect`) tell them what changed.

Refusals (nothing selected, a cut at a track's start without a mother, an edit the editor
forbids) raise :class:`ActionRefused` with a sentence for the user.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .edit import TrackEditor

__all__ = ["ACTIONS", "ActionRefused", "Selection", "perform"]

#: action name -> tracks it needs selected (0, 1 or 2)
ACTIONS = {
    "undo": 0, "redo": 0,
    "delete_cell": 1, "delete_track": 1, "split": 1, "cut": 1, "unmark_division": 1,
    "merge": 2, "swap": 2, "link": 2, "mark_division": 2,
}


class ActionRefused(ValueError):
    """The action cannot be done on this selection; the message says why and what to do."""


@dataclass(frozen=True)
class Selection:
    """The tracks selected after an action: ``primary`` (click), ``secondary`` (shift+click)."""

    primary: int | None = None
    secondary: int | None = None


def perform(ed: TrackEditor, name: str, frame: int, primary: int | None = None,
            secondary: int | None = None, *, line: np.ndarray | None = None) -> Selection:
    """Do user action ``name`` at ``frame`` on the selection; return the next selection.

    ``line`` is the cut line of ``"split"`` (two or more ``(y, x)`` points), if one is drawn.
    """
    if name not in ACTIONS:
        raise KeyError(f"unknown action {name!r}; one of {', '.join(ACTIONS)}")
    need = ACTIONS[name]
    if need >= 1 and primary is None:
        raise ActionRefused("Click a cell first to select its track.")
    if need == 2 and secondary is None:
        raise ActionRefused("Shift+click a second cell for this action.")
    a, b, t = primary, secondary, int(frame)
    try:
        return _RULES[name](ed, t, a, b, line)
    except ActionRefused:
        raise
    except ValueError as e:  # the editor's own refusals, already in words
        raise ActionRefused(str(e)) from None


def _undo(ed, t, a, b, line):
    if not ed.undo():
        raise ActionRefused("Nothing to undo.")
    return Selection(a, b)


def _redo(ed, t, a, b, line):
    if not ed.redo():
        raise ActionRefused("Nothing to redo.")
    return Selection(a, b)


def _delete_cell(ed, t, a, b, line):
    ed.delete_cell(t, a)
    return Selection(a, b)


def _delete_track(ed, t, a, b, line):
    ed.delete_track(a)
    return Selection(a, b)


def _merge(ed, t, a, b, line):
    ed.merge_cells(t, a, b)
    return Selection(a, None)


def _split(ed, t, a, b, line):
    new = ed.split_cell(t, a, line=line)
    return Selection(a, new)  # both halves selected: the next click says which is which


def _swap(ed, t, a, b, line):
    first_a, last_a, _ = ed.track(a)
    # b already has cells where a's tail would go: exchange the two tails; otherwise a's
    # tail from frame t simply becomes b's.
    if last_a < t or any(b in ed.ids_in_frame(s) for s in range(max(t, first_a), last_a + 1)):
        ed.swap_tracks(t, a, b)
        return Selection(b, a)
    ed.reassign_track(t, a, b)
    return Selection(b, None)


def _link(ed, t, a, b, line):
    first, second = sorted((a, b), key=lambda i: ed.track(i)[0])  # the earlier one continues
    ed.link_tracks(first, second)
    return Selection(first, None)


def _cut(ed, t, a, b, line):
    first, _, parent = ed.track(a)
    if t == first:  # at its first frame "cut here" means: detach it from its mother
        if not parent:
            raise ActionRefused(f"Track {a} starts here and has no mother: nothing to cut. "
                                "Move to a later frame.")
        ed.clear_parent(a)
        return Selection(a, b)
    return Selection(ed.cut_track(t, a), b)


def _mark_division(ed, t, a, b, line):
    mother, child = sorted((a, b), key=lambda i: ed.track(i)[1])  # the one that ends first
    ed.set_parent(child, mother)
    return Selection(a, b)


def _unmark_division(ed, t, a, b, line):
    ed.clear_parent(a)
    return Selection(a, b)


_RULES = {"undo": _undo, "redo": _redo, "delete_cell": _delete_cell,
          "delete_track": _delete_track, "merge": _merge, "split": _split, "swap": _swap,
          "link": _link, "cut": _cut, "mark_division": _mark_division,
          "unmark_division": _unmark_division}
