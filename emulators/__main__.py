"""``python -m emulators aws``: see :mod:`emulators.cli`."""

import sys

from emulators.cli import main

sys.exit(main())
