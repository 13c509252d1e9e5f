"""Datafiniti downloads as a dlt source: tidy tables merged into any warehouse dlt loads.

>>> import dlt                                                       # doctest: +SKIP
>>> from datafiniti_loader.dlt import datafiniti_source              # doctest: +SKIP
>>> dlt.pipeline("datafiniti", destination="duckdb").run(datafiniti_source(6073))  # doctest: +SKIP

- :mod:`.source`: the source, its two modes (downloads given, or a query
  kept current) and the rows it hands dlt;
- :mod:`.hints`: each table's keys and how a record's rows are replaced;
- :mod:`.held`: what the destination already holds, read back through dlt;
- :mod:`.fit`: whether a download's values fit the destination's column types.

Needs the ``[dlt]`` extra (``pip install 'datafiniti-loader[dlt]'``).
"""

from __future__ import annotations

try:
    import dlt as _dlt  # noqa: F401  (the source is declared with dlt's decorators)
except ImportError:
    raise ImportError("The dlt source needs dlt: pip install 'datafiniti-loader[dlt]'") from None

from .source import datafiniti_source

__all__ = ["datafiniti_source"]
