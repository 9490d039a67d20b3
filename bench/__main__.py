"""``python -m bench`` is the ``gradsweep`` command."""

import sys

from bench.cli import main

sys.exit(main())
