"""The run of a movie as a GUI drives it, without the GUI: phases, jobs and their messages.

A :class:`RunController` owns what a run is made of -- the
:class:`~napari_cosine_tracker.core.pipeline.TrackingSession`, the :class:`Phase` it is in,
the lock through which one thread at a time talks to the session, the stop flag and the
cluster settings the jobs read -- and the jobs themselves as generators. A job yields typed
messages (:class:`SessionReady`, :class:`FrameDone`, :class:`TrackingStarted`,
:class:`PairLinked`) and returns :class:`Stopped` or :class:`RunDone`. The napari widget
runs these generators in its worker threads and draws the messages; a script or a test can
iterate them directly. Listeners (:meth:`RunController.connect`) hear every phase change.

Nothing here imports Qt or napari.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

import numpy as np

__all__ = ["Phase", "StepError", "RunController", "SessionReady", "FrameDone",
           "TrackingStarted", "PairLinked", "Stopped", "RunDone", "Message"]

log = logging.getLogger(__name__)


class Phase(str, Enum):
    """What the run is doing. A ``str`` enum: ``Phase.RUNNING == "running"``."""

    IDLE = "idle"  # nothing running (a result may be shown)
    ESTIMATING = "estimating"  # measuring the cells for the resize factor
    RUNNING = "running"  # the network goes through the frames, pairs previewed
    PAUSED = "paused"  # stopped after a frame; the network's state is kept for resume
    TRACKING = "tracking"  # clustering every pair and linking the tracks
    EXPORTING = "exporting"
    TRAINING = "training"  # fine-tuning the model on the corrected cells


class StepError(Exception):
    """A background step failed; the message names the step and the cause.

    Deliberately not a RuntimeError: napari's generator workers take a RuntimeError for a
    deleted worker and stop without telling anyone.
    """


def step_error(what: str, exc: BaseException) -> StepError:
    return StepError(f"{what}: {type(exc).__name__}: {exc}")


# -- messages ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionReady:
    """The model is loaded: the session the rest of the run uses."""

    session: Any


@dataclass(frozen=True)
class FrameDone:
    """Frame ``t`` went through the network; ``la``/``lb`` preview the pair (t-1, t) (None
    for frame 0), ``rgb`` its embedding colours (uint8, when asked for)."""

    t: int
    la: np.ndarray | None
    lb: np.ndarray | None
    rgb: np.ndarray | None


@dataclass(frozen=True)
class TrackingStarted:
    """Every frame has been through the network; clustering and linking begin."""


@dataclass(frozen=True)
class PairLinked:
    """The pair ending at frame ``t`` is clustered and linked."""

    t: int


@dataclass(frozen=True)
class Stopped:
    """The job stopped on request (pause or cancel); ``session`` continues where it was."""

    session: Any


@dataclass(frozen=True)
class RunDone:
    """The tracking result, and what ``finish`` built from it in the worker (if given)."""

    session: Any
    labels: np.ndarray
    lineage: np.ndarray
    params: Any
    extra: Any = None


Message = SessionReady | FrameDone | TrackingStarted | PairLinked


def embedding_rgb(rgb) -> np.ndarray:
    """Embedding colours in [0, 1] as the uint8 RGB an image layer shows."""
    return (np.clip(np.asarray(rgb), 0, 1) * 255).astype(np.uint8)


class RunController:
    """Session, phase, lock, stop flag and the jobs of one run (see the module docstring).

    Parameters
    ----------
    params : ClusterParams
        The cluster settings the jobs read for the frames still to come; the GUI replaces
        :attr:`params` as the user changes them (one assignment: the jobs see the old or the
        new object, never a mix).
    """

    def __init__(self, params=None, daughter_ratio: float | None = None):
        from .cluster import ClusterParams
        from .track import TrackParams

        self.session = None
        self.session_key = None  # what the session was made from (movie, model, device...)
        self.lock = threading.Lock()  # one thread at a time talks to the session
        self.stop = threading.Event()
        self.stop_reason: str | None = None  # "pause" | "cancel"
        self.params = params if params is not None else ClusterParams()
        self.daughter_ratio = (TrackParams().min_daughter_ratio if daughter_ratio is None
                               else float(daughter_ratio))
        self.want_rgb = False  # colour each frame's embeddings as it comes
        self._phase = Phase.IDLE
        self._listeners: list[Callable[[Phase], Any]] = []

    # -- phase and events --------------------------------------------------------------------
    @property
    def phase(self) -> Phase:
        return self._phase

    @phase.setter
    def phase(self, value) -> None:
        value = Phase(value)
        if value is self._phase:
            return
        self._phase = value
        for fn in list(self._listeners):
            try:
                fn(value)
            except Exception:  # a broken view must not stop the run
                log.exception("phase listener %r failed", fn)

    def connect(self, fn: Callable[[Phase], Any]) -> Callable[[Phase], Any]:
        """Call ``fn(phase)`` on every phase change; returns ``fn``."""
        self._listeners.append(fn)
        return fn

    def disconnect(self, fn) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def request_stop(self, reason: str) -> None:
        """Ask the running job to stop after its current step (``"pause"`` or ``"cancel"``)."""
        self.stop_reason = reason
        self.stop.set()

    def job_ended(self) -> None:
        """Reset the stop request once a job is over; a paused run stays paused."""
        if self._phase is not Phase.PAUSED:
            self.phase = Phase.IDLE
        self.stop_reason = None
        self.stop.clear()

    def stopped(self) -> None:
        """A job returned :class:`Stopped`: paused (resumable) or idle after a cancel."""
        self.phase = Phase.PAUSED if self.stop_reason == "pause" else Phase.IDLE

    # -- jobs --------------------------------------------------------------------------------
    def run_job(self, movie, model_dir=None, device="auto", scale: float = 1.0,
                finish: Callable | None = None) -> Iterator[Message]:
        """Generator: (make the session,) run the network frame by frame with a preview of
        each pair, then track. Continues a paused session from its next frame.

        ``finish(labels, lineage)`` runs in the worker on the result (e.g. to build a layer
        off the GUI thread); its return value is :attr:`RunDone.extra`.
        """
        session = self.session
        if session is None:
            from .pipeline import TrackingSession

            try:
                session = TrackingSession(movie, model_dir=model_dir, device=device,
                                          params=self.params, scale=scale)
            except Exception as e:
                raise step_error("Loading the model failed", e) from e
            self.session = session
            yield SessionReady(session)
        gen = session.run_model()
        try:
            while True:
                t = None
                try:
                    with self.lock:
                        t = next(gen)
                        la = lb = None
                        if t >= 1:
                            la, lb = session.cluster_pair(t, self.params)
                        rgb = embedding_rgb(session.pca_rgb(t)) if self.want_rgb else None
                except StopIteration:
                    break
                except Exception as e:
                    # 0-based like napari's time slider and MovieError's messages
                    where = f"frame {session.frames_done if t is None else t}"
                    raise step_error(f"Running the network on {where} failed", e) from e
                yield FrameDone(t, la, lb, rgb)
                if self.stop.is_set():
                    return Stopped(session)
        finally:
            gen.close()  # keeps the ConvGRU state: run_model() resumes from frames_done
        return (yield from self.track_job(finish))

    def track_job(self, finish: Callable | None = None) -> Iterator[Message]:
        """Generator: cluster every pair with :attr:`params` and link the tracks."""
        session, params = self.session, self.params
        yield TrackingStarted()
        gen = session.track(params, replace(session.track_params,
                                            min_daughter_ratio=self.daughter_ratio))
        try:
            while True:
                try:
                    with self.lock:
                        t = next(gen)
                except StopIteration:
                    break
                except Exception as e:
                    raise step_error("Linking cells into tracks failed", e) from e
                yield PairLinked(t)
                if self.stop.is_set():
                    return Stopped(session)
        finally:
            gen.close()
        try:
            res = session.result
            labels = np.asarray(res.labels).astype(np.uint32, copy=False)
            lineage = np.asarray(res.lineage, np.int64)
            extra = finish(labels, lineage) if finish is not None else None
        except Exception as e:
            raise step_error("Collecting the tracks failed", e) from e
        return RunDone(session, labels, lineage, params, extra)

    def rgb_job(self, frames) -> Iterator[FrameDone]:
        """Generator: the embedding colours of ``frames`` already through the network, as
        :class:`FrameDone` messages without a preview (``la``/``lb`` None)."""
        for t in frames:
            try:
                with self.lock:
                    rgb = embedding_rgb(self.session.pca_rgb(t))
            except Exception as e:
                raise step_error(f"Colouring the embedding of frame {t} failed", e) from e
            yield FrameDone(t, None, None, rgb)

    def cluster_pair(self, t: int, params=None):
        """The pair (t-1, t) clustered with ``params`` (live tuning); ``(t, la, lb)``."""
        try:
            with self.lock:
                la, lb = self.session.cluster_pair(t, params or self.params)
        except Exception as e:
            raise step_error(f"Finding cells in frames {t - 1} and {t} failed", e) from e
        return t, la, lb
