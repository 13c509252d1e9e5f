"""Stage 4, sinks: typed Arrow batches to where the data lives.

Takes a load (:class:`~datafiniti_loader.loader.LoadSource`: its files and
their decided schema) and gives a frame or a dataset:

- in memory: pandas or polars (:mod:`~datafiniti_loader.sinks.outputs`), dask
  (:mod:`~datafiniti_loader.sinks.dask`);
- on disk or an object store: a Parquet dataset, streamed and published all
  or nothing (:func:`~datafiniti_loader.sinks.parquet.write_parquet`, with
  :mod:`~datafiniti_loader.sinks.publish`), or a Delta table merged record by
  record (:func:`~datafiniti_loader.sinks.delta.write_delta`, with
  :mod:`~datafiniti_loader.sinks.deltaplan`,
  :mod:`~datafiniti_loader.sinks.deltafiles` and
  :mod:`~datafiniti_loader.sinks.deltarules`).

Users reach them through :func:`~datafiniti_loader.load_results`,
:func:`~datafiniti_loader.to_parquet` and :func:`~datafiniti_loader.to_delta`.
Inside: :mod:`~datafiniti_loader.sinks.onepass` (a conversion that reads each
file once while the types hold) and :mod:`~datafiniti_loader.sinks.prefetch`
(a stage on a thread of its own). This package's ``__init__`` imports nothing.
"""
