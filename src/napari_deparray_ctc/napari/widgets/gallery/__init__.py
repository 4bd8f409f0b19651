"""The "Cell gallery" dock widget."""
