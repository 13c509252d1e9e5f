"""``python -m datafiniti_loader``: the command line, where its script is not on PATH."""

import sys

from .cli import main

sys.exit(main())
