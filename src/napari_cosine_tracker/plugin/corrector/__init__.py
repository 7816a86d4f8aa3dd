"""The parts of the "Track correction" widget (``plugin/correction.py``), one module per
concern, each a mixin of :class:`~..correction.CorrectionWidget`:

=============  ========================================================================
``binding``    which Labels layer is corrected; binding it to a TrackEditor, restoring
``selection``  first / second selected track: keys, clicks, lineage view, outline
``editing``    keys and buttons -> core.user_actions; paint strokes -> one editor edit
``views``      the changed frames, Tracks layer, lineage view, buttons, review list
``saving``     autosave, Save project as…, exports (CTC, GEFF, CSV)
``common``     layer names, shortcuts, drawing helpers
=============  ========================================================================

The editing rules themselves are not here: they are core user actions
(:mod:`napari_cosine_tracker.core.user_actions`) on a
:class:`~napari_cosine_tracker.core.edit.TrackEditor`, whose events say what to redraw.
"""
