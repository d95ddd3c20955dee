"""Standalone helpers that import nothing from the rest of the package."""
