"""Stage 1, remote: a request id to its status and result files, through Datafiniti's API.

Takes a request id (or a query, to count and create downloads) and gives
:class:`~datafiniti_loader.remote.models.DownloadRequest` and
:class:`~datafiniti_loader.remote.models.ResultFile` objects: what the API says,
pre-signed URLs included, never a byte of a result file.

Public entry points:

- :class:`~datafiniti_loader.remote.client.Client`: ``request``, ``wait``,
  ``results``, ``count``, ``create_download``, ``cancel``;
- :mod:`~datafiniti_loader.remote.models`: ``ResultFile``, ``ResultFiles``,
  ``DownloadRequest``.

Inside: :mod:`~datafiniti_loader.remote.versions` (v3 and v4 as two adapters)
over :mod:`~datafiniti_loader.remote.http` (auth, timeouts, retries, the one
place an answer becomes an error). Modules are imported on first use: this
package's ``__init__`` imports nothing.
"""
