"""``python -m gradsweep`` is the ``gradsweep`` command."""

import sys

from gradsweep.cli.app import main

sys.exit(main())
