"""Vector storage in SQLite and exact cosine search in memory, with row-level security as a filter."""

from .index import Accept, VectorIndex
from .rls import VisibleRows, accept_visible

__all__ = ["Accept", "VectorIndex", "VisibleRows", "accept_visible"]
