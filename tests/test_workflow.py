"""The run controller without Qt: phases, job messages, pause and resume, live re-clustering."""

from __future__ import annotations


import numpy as np
import pytest

from napari_cosine_tracker.core.model import default_model_dir
from napari_cosine_tracker.core.synthetic import make_synthetic_movie
from napari_cosine_tracker.core.workflow import (
    FrameDone,
    PairLinked,
    Phase,
    RunController,
    RunDone,
    SessionReady,
    StepError,
    Stopped,
    TrackingStarted,
)

needs_model = pytest.mark.skipif(not (default_model_dir() / "weights.safetensors").is_file(),
                                 reason="the packaged model is not in this checkout")


def drive(gen):
    """Iterate a job as a worker thread would: (messages, returned value)."""
    messages = []
    while True:
        try:
            messages.append(next(gen))
        except StopIteration as stop:
            return messages, stop.value


def test_phase_is_an_enum_that_reads_as_text_and_tells_listeners():
    ctl = RunController()
    seen = []
    ctl.connect(seen.append)
    assert ctl.phase is Phase.IDLE and ctl.phase == "idle"
    ctl.phase = "running"  # text is accepted and stored as the enum
    ctl.phase = Phase.RUNNING  # no change, no event
    ctl.request_stop("pause")
    ctl.stopped()
    assert seen == [Phase.RUNNING, Phase.PAUSED]
    ctl.job_ended()  # a paused run stays paused, the stop request is cleared
    assert ctl.phase is Phase.PAUSED and not ctl.stop.is_set() and ctl.stop_reason is None
    with pytest.raises(ValueError):
        ctl.phase = "dancing"


@needs_model
def test_run_pause_resume_and_live_reclustering_without_qt():
    movie = make_synthetic_movie(n_frames=5, shape=(96, 96), n_cells=4, seed=1).images
    ctl = RunController()
    ctl.want_rgb = True
    ctl.phase = Phase.RUNNING
    job = ctl.run_job(movie, device="cpu", scale=1.5)
    first = next(job)
    assert isinstance(first, SessionReady) and ctl.session is first.session
    frame0 = next(job)
    assert isinstance(frame0, FrameDone) and frame0.t == 0 and frame0.la is None
    assert frame0.rgb.dtype == np.uint8 and frame0.rgb.shape == (96, 96, 3)
    ctl.request_stop("pause")  # as the Pause button does: stop after the frame shown
    messages, result = drive(job)
    assert messages == [] and isinstance(result, Stopped)
    ctl.stopped()
    ctl.job_ended()
    assert ctl.phase is Phase.PAUSED and ctl.session.frames_done == 1

    # resume: the same session continues from frame 2, then tracks
    ctl.phase = Phase.RUNNING
    built = []
    messages, result = drive(ctl.run_job(movie, finish=lambda lab, lin: built.append(len(lin)) or "x"))
    frames = [m for m in messages if isinstance(m, FrameDone)]
    assert [m.t for m in frames] == [1, 2, 3, 4]
    assert frames[0].la.shape == frames[0].lb.shape == (96, 96)  # the pair (0, 1) previewed
    kinds = [type(m) for m in messages]
    assert kinds.index(TrackingStarted) == 4 and kinds.count(PairLinked) == 4
    assert isinstance(result, RunDone) and result.extra == "x" and built
    assert result.labels.shape == (5, 96, 96) and result.labels.dtype == np.uint32
    assert len(result.lineage) >= 3  # the movie's cells are found and tracked

    # colours of frames run without them, as when the user switches them on afterwards
    ctl.want_rgb = False
    colours = list(ctl.rgb_job([0, 3]))
    assert [m.t for m in colours] == [0, 3] and colours[1].rgb.shape == (96, 96, 3)

    # live tuning of one pair, as the sliders do
    t, la, lb = ctl.cluster_pair(2)
    assert t == 2 and la.shape == (96, 96)

    # apply to all: tracking again with other settings, no network
    from dataclasses import replace

    ctl.params = replace(ctl.params, min_cluster_size=ctl.params.min_cluster_size * 2)
    messages, again = drive(ctl.track_job())
    assert isinstance(messages[0], TrackingStarted) and again.params is ctl.params


def test_a_failing_step_names_itself(tmp_path):
    ctl = RunController()
    job = ctl.run_job(np.zeros((3, 32, 32), np.float32), model_dir=tmp_path / "no-model")
    with pytest.raises(StepError, match="Loading the model failed"):
        next(job)
