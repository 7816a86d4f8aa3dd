"""Section 6, teaching the model: fine-tune the network on this movie's (corrected) cells."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import Container, SpinBox
from napari.utils.notifications import show_warning
from qtpy.QtWidgets import QFileDialog, QPushButton

from napari_cosine_tracker.core.workflow import Phase, step_error

from .common import MODEL_FOLDER, group_box, note


class TeachSection:
    """Fine-tuning on the cells layer, then switching to the new model."""

    def _build_teach(self):
        """Training steps and Fine-tune."""
        self.finetune_steps = SpinBox(label="Training steps", value=200, min=1, max=100_000, step=50,
                                      tooltip="How long to train: each step shows the network a "
                                              "few frames of this movie (or of built-in "
                                              "synthetic ones, so it keeps what it knew). About "
                                              "2 s a step on two CPU cores, far less on a GPU.")
        self.finetune_button = QPushButton("Fine-tune on these cells…")
        self.finetune_button.setToolTip("Train the current model further on this movie and its "
                                        "cells as they are now (corrections included), save it "
                                        "as a new model folder and switch to it. Cancel stops "
                                        "early and keeps what was learnt.")
        self.finetune_info = note("After correcting the cells, let the model learn from them; "
                                  "then Run again with the new model.")
        return group_box("6 · Teach the model", Container(widgets=[self.finetune_steps]).native,
                         self.finetune_button, self.finetune_info)

    def _fine_tune_dialog(self):
        # Beside the user's own model folder; never inside the package's models.
        base = (self._model_dir().parent if self.model_source.value == MODEL_FOLDER
                else Path(self._default_export_dir()).parent)
        path, _ = QFileDialog.getSaveFileName(
            self, "Save the fine-tuned model as a folder (created)", str(base / "my_model"))
        if path:
            self.fine_tune(path)

    def fine_tune(self, path, steps: int | None = None):
        """Fine-tune the current model on the movie and its cells layer (corrections included)
        and save it to the model folder ``path``; when done, switch the widget to it.

        The frames are resized as for the run (*Resize frames by*), so the new model expects
        the same setting. Built-in synthetic movies join the training data and the learning
        rate is low (``core.train.teaching_config``), so the model keeps what it knew. Cancel stops after the current step and keeps the model so far.
        """
        from napari_cosine_tracker.core.devices import resolve_device
        from napari_cosine_tracker.core.model import read_model_config
        from napari_cosine_tracker.core.train import (
            TEACH_DATA,
            iter_train,
            sequence_from_arrays,
            teaching_config,
        )

        lab, (movie, _) = self.labels_layer, self._check_movie()
        if (lab is None or lab not in self.viewer.layers or not self._tracked or self._stale
                or self._worker or movie is None):
            show_warning("Nothing to learn from yet: run the tracking (and correct it) first.")
            return None
        path = Path(path)
        if path.exists() and any(path.iterdir()) and not (path / "config.json").exists():
            show_warning(f"{path} is a folder with other files in it; choose a new folder.")
            return None
        steps = int(steps or self.finetune_steps.value)
        model_dir = self._model_dir()
        labels = np.asarray(lab.data)
        scale = float(self.scale.value)
        device = str(resolve_device(self._device()))
        self.controller.phase = Phase.TRAINING
        losses = []

        def job():
            try:
                config = read_model_config(model_dir)
                pixel_scale = float(config.get("preprocessing", {}).get("pixel_scale", 1.0)) * scale
                data = [sequence_from_arrays(movie, labels, pixel_scale, name=lab.name,
                                             notes={"labels": "napari layer"}), *TEACH_DATA]
                cfg = teaching_config(model_dir, steps, n_frames=len(labels), device=device)
                training = iter_train(data, path, cfg=cfg, progress=False,
                                      command=f"napari widget: fine-tune on layer {lab.name!r}")
                try:
                    for _, loss in training:
                        losses.append(loss)
                        yield 1
                        if self.controller.stop.is_set():
                            break
                finally:
                    training.close()  # saves the model as it is
            except Exception as e:
                raise step_error("Fine-tuning failed", e) from e

        def done(_):
            if not losses or not (path / "weights.safetensors").exists():
                return
            n = len(losses)
            first, last = float(np.mean(losses[:10])), float(np.mean(losses[-10:]))
            self.finetune_info.setText(f"Trained {n} steps (loss {first:.3f} → {last:.3f}); saved "
                                       f"to {path}. Now using it: Run to track with it.")
            settings = {k: w.value for k, w in self.param_widgets.items()}
            self.model_source.value = MODEL_FOLDER
            self.model_folder.value = str(path)
            for k, v in settings.items():  # the settings the cells were made with carry over
                self.param_widgets[k].value = v

        return self._start("finetune", job, total=steps, desc="Fine-tuning",
                           on_yield=self._step, on_return=done)
