"""Stage 2, fetch: a result file to a complete, verified local copy.

Takes :class:`~datafiniti_loader.remote.models.ResultFile` objects (their
pre-signed URLs) and gives local paths, in load order, as each download
completes: streamed from the bucket with retries, ``Range`` resumes, size and
``ETag`` checks, and kept in the cache keyed by what a file is, not its URL.

Public entry points:

- :class:`~datafiniti_loader.fetch.download.Download`: a load's files,
  downloaded in parallel (``local_files()``);
- :class:`~datafiniti_loader.fetch.cache.FileCache` and
  :class:`~datafiniti_loader.fetch.cache.ScratchStore`: where they live
  (``cache info``/``cache clear`` use the former);
- :class:`~datafiniti_loader.fetch.transport.Transport` over
  :class:`~datafiniti_loader.fetch.bucketfs.BucketFileSystem`: one file, one
  GET per try, the URL exactly as signed.

Inside: :mod:`~datafiniti_loader.fetch.orphans` (directories of killed
processes) and :mod:`~datafiniti_loader.fetch.nofollow` (files opened
without following links). This package's ``__init__`` imports nothing.
"""
