"""Jinja templates of the generated ``*_connect.py`` modules (``*.j2`` files)."""
