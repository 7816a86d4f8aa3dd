"""The parts of the "Segment and track cells" widget (``plugin/widget.py``), one module per
section as the user meets them, each a mixin of :class:`~..widget.TrackerWidget`:

==================  =====================================================================
``movie``           1 · Movie: the image layer, Open…, the movie's checks
``model``           2 · Model: packaged model or folder, device, resize factor, measuring
``run``             3 · Run, Pause/Resume, Cancel, embedding colours
``detection``       4 · Cell detection: clustering rows, live re-labelling, Apply to all
``output``          5 · Output: the CTC export
``teach``           6 · Teach the model: fine-tuning on the cells layer
``output_layers``   the Labels / Tracks / colour layers a run fills and shows
``jobs``            the one background worker at a time and its progress
``settings``        what is remembered between sessions
``common``          names and helpers the sections share
==================  =====================================================================

The run's state (phase, session, stop flag, workers' functions) is not here: it lives in
:class:`napari_cosine_tracker.core.workflow.RunController`, which has no Qt. The sections only
turn clicks into its calls and draw what it reports.
"""
