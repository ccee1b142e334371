"""``python -m iris_opencti_module`` is ``iris-opencti``."""

import sys

from .cli import main

sys.exit(main())
