"""Lineage tree view: one horizontal bar per track, time along x, daughters below their mother.

Drawn with a plain ``QGraphicsScene`` (no plotting library): each track is a bar from its first
to its last frame in the colour of its cells, a division is a dot on the mother's end joined to
each daughter's start, a gap link (a cell missing for a few frames) a dashed line. A vertical
line marks the frame under napari's time slider; the selected tracks are outlined.

Clicking a bar emits :attr:`LineageView.node_clicked` ``(track_id, frame, shift)`` with the
frame under the mouse, clipped to the track; the correction widget then moves the time slider
there and selects the track.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from qtpy.QtCore import QPointF, QRectF, Qt, Signal
from qtpy.QtGui import QBrush, QColor, QFont, QPainter, QPen
from qtpy.QtWidgets import (
    QGraphicsEllipseItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsView,
)

__all__ = ["LineageView", "track_rows"]

DX = 14.0  # pixels per frame at most; less to fit a long movie in the view's width
DX_MIN = 5.0
ROW = 12.0  # pixels per track row
BAR = 6.0  # bar height
LEFT = 8.0
TOP = 18.0  # room for the frame ruler


def track_rows(lineage) -> dict[int, int]:
    """Row of every track: each lineage tree depth first, daughters right under their mother.

    Roots are ordered by first frame then id, daughters by id, so a tree reads top-down and
    rows stay put when unrelated tracks change.
    """
    lin = np.asarray(lineage, dtype=np.int64).reshape(-1, 4)
    first = {int(r[0]): int(r[1]) for r in lin}
    kids: dict[int, list[int]] = {}
    roots = []
    for i, _, _, p in lin.tolist():
        if p and p in first:
            kids.setdefault(p, []).append(i)
        else:
            roots.append(i)
    rows: dict[int, int] = {}
    stack = sorted(roots, key=lambda i: (first[i], i), reverse=True)
    while stack:
        i = stack.pop()
        if i in rows:  # guards against a cyclic (corrupt) lineage
            continue
        rows[i] = len(rows)
        stack.extend(sorted(kids.get(i, []), reverse=True))
    return rows


class _TrackBar(QGraphicsRectItem):
    def __init__(self, track_id: int, first: int, last: int, rect: QRectF):
        super().__init__(rect)
        self.track_id, self.first, self.last = track_id, first, last


class LineageView(QGraphicsView):
    """Lineage tree of a tracking result; click a bar to go to that cell."""

    #: (track id, frame, shift held)
    node_clicked = Signal(int, int, bool)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.setBackgroundBrush(QBrush(QColor(38, 41, 48)))
        self.setToolTip("Lineage: one bar per track (time → right), daughters below their mother.\n"
                        "Click a bar to go to that cell; Shift+click selects a second track.")
        self.setMinimumHeight(120)
        self._bars: dict[int, _TrackBar] = {}
        self._rows: dict[int, int] = {}
        self._cursor = None
        self._selection: tuple[int | None, int | None] = (None, None)
        self._dx = DX
        self._args = None

    # ---- geometry -----------------------------------------------------------------------
    def x_of(self, t: float) -> float:
        return LEFT + t * self._dx

    def y_of(self, track_id: int) -> float:
        return TOP + self._rows[track_id] * ROW + ROW / 2

    def scene_pos(self, track_id: int, t: int) -> QPointF:
        """Scene point of a track's cell in frame ``t`` (the centre of that part of its bar)."""
        return QPointF(self.x_of(t + 0.5), self.y_of(track_id))

    @property
    def rows(self) -> dict[int, int]:
        return dict(self._rows)

    # ---- content ------------------------------------------------------------------------
    def set_lineage(self, lineage, n_frames: int, color: Callable[[int], QColor] | None = None):
        """Redraw for a lineage ``(N, 4)``; ``color(track_id)`` gives each bar's colour."""
        self._args = (lineage, n_frames, color)
        room = self.viewport().width() - 2 * LEFT - 36  # 36: the id after the last bar
        self._dx = float(np.clip(room / max(n_frames, 1), DX_MIN, 3 * DX))
        scene = self.scene()
        scene.clear()
        self._bars.clear()
        self._cursor = None
        lin = np.asarray(lineage, dtype=np.int64).reshape(-1, 4)
        self._rows = track_rows(lin)
        rows = {int(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in lin}
        width = self.x_of(max(n_frames, 1)) + LEFT + 36
        height = TOP + len(self._rows) * ROW + 4
        scene.setSceneRect(QRectF(0, 0, width, height))
        # frame ruler: a tick every frame, a number every few frames (at least 24 px apart)
        ruler = QPen(QColor(120, 125, 135))
        ruler.setCosmetic(True)
        font = QFont()
        font.setPointSizeF(7)
        step = next((k for k in (1, 2, 5, 10, 20, 50, 100, 200) if k * self._dx >= 24), 500)
        for t in range(0, max(n_frames, 1)):
            x = self.x_of(t + 0.5)
            scene.addLine(x, TOP - 4, x, TOP - 1, ruler)
            if t % step == 0:
                txt = scene.addSimpleText(str(t), font)
                txt.setBrush(QBrush(QColor(170, 175, 185)))
                txt.setPos(x - txt.boundingRect().width() / 2, 0)
        link_pen = QPen(QColor(200, 200, 200))
        link_pen.setCosmetic(True)
        link_pen.setWidthF(1.2)
        gap_pen = QPen(link_pen)
        gap_pen.setStyle(Qt.PenStyle.DashLine)
        for i, (f, l, p) in rows.items():
            if p and p in rows:
                pl = rows[p][1]
                x0, y0 = self.x_of(pl + 1), self.y_of(p)
                x1, y1 = self.x_of(f), self.y_of(i)
                pen = link_pen if f == pl + 1 else gap_pen
                scene.addLine(x0, y0, x0, y1, pen).setZValue(1)
                scene.addLine(x0, y1, x1, y1, pen).setZValue(1)
        no_pen = QPen(Qt.PenStyle.NoPen)
        for i, (f, l, p) in rows.items():
            rect = QRectF(self.x_of(f) + 1, self.y_of(i) - BAR / 2, (l - f + 1) * self._dx - 2,
                          BAR)
            bar = _TrackBar(i, f, l, rect)
            c = color(i) if color is not None else QColor(180, 180, 180)
            bar.setBrush(QBrush(c))
            bar.setPen(no_pen)
            bar.setToolTip(f"track {i}: frames {f}–{l}" + (f", parent {p}" if p else ""))
            bar.setZValue(2)
            scene.addItem(bar)
            self._bars[i] = bar
            tag = scene.addSimpleText(str(i), font)
            tag.setBrush(QBrush(QColor(200, 204, 212)))
            tag.setPos(self.x_of(l + 1) + 3, self.y_of(i) - tag.boundingRect().height() / 2)
        # division joints: a dot at the end of every mother with daughters right after her
        mothers = {p for i, (f, _, p) in rows.items() if p in rows and rows[p][1] + 1 == f}
        for p in mothers:
            x, y = self.x_of(rows[p][1] + 1), self.y_of(p)
            dot = QGraphicsEllipseItem(x - 3.5, y - 3.5, 7, 7)
            dot.setBrush(QBrush(QColor(255, 255, 255)))
            dot.setPen(no_pen)
            dot.setZValue(3)
            dot.setToolTip(f"division of track {p}")
            scene.addItem(dot)
        cursor_pen = QPen(QColor(255, 210, 60))
        cursor_pen.setCosmetic(True)
        cursor_pen.setWidthF(1.5)
        self._cursor = scene.addLine(0, 0, 0, height, cursor_pen)
        self._cursor.setZValue(4)
        self._apply_selection()

    def set_time(self, t: int) -> None:
        """Move the frame marker to frame ``t``."""
        if self._cursor is not None:
            x = self.x_of(t + 0.5)
            self._cursor.setLine(x, TOP - 6, x, self.sceneRect().height())

    @property
    def time(self) -> int | None:
        """The frame the marker is on (None before a lineage is shown)."""
        if self._cursor is None:
            return None
        return int(round((self._cursor.line().x1() - LEFT) / self._dx - 0.5))

    def set_selection(self, primary: int | None, secondary: int | None = None) -> None:
        """Outline the selected tracks (white: first, yellow: second) and scroll to the first."""
        self._selection = (primary, secondary)
        self._apply_selection()
        if primary in self._bars:
            self.ensureVisible(self._bars[primary], 20, 20)

    def _apply_selection(self):
        primary, secondary = self._selection
        for i, bar in self._bars.items():
            if i == primary:
                pen = QPen(QColor(255, 255, 255), 2.0)
            elif i == secondary:
                pen = QPen(QColor(255, 220, 0), 2.0)
            else:
                bar.setPen(QPen(Qt.PenStyle.NoPen))
                continue
            pen.setCosmetic(True)
            bar.setPen(pen)
            bar.setZValue(5)

    def resizeEvent(self, event):  # noqa: N802 - Qt name
        super().resizeEvent(event)
        if self._args is not None and abs(event.size().width() - event.oldSize().width()) > 8:
            cursor_t = self.time
            self.set_lineage(*self._args)
            if cursor_t is not None:
                self.set_time(cursor_t)

    # ---- interaction --------------------------------------------------------------------
    def mousePressEvent(self, event):  # noqa: N802 - Qt name
        pos = self.mapToScene(event.position().toPoint() if hasattr(event, "position")
                              else event.pos())
        bar = self._bar_near(pos)
        if bar is not None and event.button() == Qt.MouseButton.LeftButton:
            t = int(np.clip(np.floor((pos.x() - LEFT) / self._dx), bar.first, bar.last))
            shift = bool(event.modifiers() & Qt.KeyboardModifier.ShiftModifier)
            self.node_clicked.emit(bar.track_id, t, shift)
            event.accept()
            return
        super().mousePressEvent(event)

    def _bar_near(self, pos: QPointF) -> _TrackBar | None:
        """The bar under ``pos``, forgiving a few pixels above or below (bars are thin)."""
        if not self._rows:
            return None
        row = int(np.floor((pos.y() - TOP) / ROW))
        t = (pos.x() - LEFT) / self._dx
        for i, r in self._rows.items():
            if r == row:
                bar = self._bars.get(i)
                if bar is not None and bar.first - 0.5 <= t <= bar.last + 1.5:
                    return bar
        return None
