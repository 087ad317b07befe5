"""Renderers of the same session result: terminal now; markdown, JUnit and JSON build on it."""
