"""Stage 3, read: local copies to Arrow record batches, typed across every file.

Takes the local paths of a load's result files and gives record batches:
CSV cells as text and JSON values as nested Arrow types
(:func:`~datafiniti_loader.read.files.read_file`), then one schema decided
from all the data, lossless (:class:`~datafiniti_loader.read.schema.SchemaBuilder`),
``dtype=`` where asked (:mod:`~datafiniti_loader.read.dtypes`) and, with
``dedupe=True``, each record's newest copy
(:class:`~datafiniti_loader.read.dedupe.NewestCopies`).

Public entry points: :func:`~datafiniti_loader.read.files.read_file`,
:class:`~datafiniti_loader.read.schema.SchemaBuilder` and
:func:`~datafiniti_loader.read.schema.conform`.

Inside: the CSV readers (:mod:`~datafiniti_loader.read.csvfile`, and the
careful :mod:`~datafiniti_loader.read.csvrecords`), the JSON reader
(:mod:`~datafiniti_loader.read.jsonfile`), and parsed copies
(:mod:`~datafiniti_loader.read.parsed`), which make a second read of a file
cost no second parse. This package's ``__init__`` imports nothing.
"""
