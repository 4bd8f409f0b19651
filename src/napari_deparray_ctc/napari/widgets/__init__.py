"""Dock widgets: one folder per widget (widget.py builds, wires and forwards)."""
