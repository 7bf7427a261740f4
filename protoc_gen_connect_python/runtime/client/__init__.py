"""Async and sync clients."""
