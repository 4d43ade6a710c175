"""Noctis shared library."""
