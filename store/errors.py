"""Errors raised by the storage layer."""


class StoreError(Exception):
    """Base of every error raised by `store/`."""
