"""Sync: keep a Delta table current from a query, paying only for the records that changed.

- :mod:`.marks`: the high-water mark and the query for what came after it;
- :mod:`.state`: what a synced path remembers (commit metadata, a journal);
- :mod:`.run`: one sync, count to commit;
- :mod:`.summary`: what it did.
"""

from .run import sync
from .summary import SyncSummary

__all__ = ["SyncSummary", "sync"]
