"""The "Train classifier" dock widget."""
