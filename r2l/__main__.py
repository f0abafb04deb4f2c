"""``python -m r2l``: the ``r2l`` command (see :mod:`r2l.cli`)."""

import sys

from r2l.cli import main

sys.exit(main())
