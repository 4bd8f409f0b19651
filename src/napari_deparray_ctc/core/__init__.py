"""Core library: reading, synthesis, model, training and metrics.

Nothing under ``core`` imports napari, Qt or magicgui, so every function here can be
called from a script, a notebook or the ``deparray-ctc`` command line.
"""
