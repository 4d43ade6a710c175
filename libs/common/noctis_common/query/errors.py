"""The error raised for a query that the index cannot run as requested."""

from __future__ import annotations


class InvalidQueryError(ValueError):
    """A query key or value that is invalid or cannot be matched.

    The message names the key and the value and states what would be accepted, so that
    QIDO-RS can send it in a 400 response and C-FIND in its error comment.
    """
