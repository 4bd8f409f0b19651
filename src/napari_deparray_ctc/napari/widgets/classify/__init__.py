"""The "Classify cells" dock widget."""
