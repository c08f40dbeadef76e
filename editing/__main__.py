"""``python -m editing``: see :mod:`editing.cli`."""

import sys

from editing.cli import main

sys.exit(main())
