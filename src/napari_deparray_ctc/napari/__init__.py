"""The napari adapter: reader, writer, sample data, layers, session state, workers, widgets.

Importing this package imports neither Qt nor torch; each module imports what it needs.
"""
