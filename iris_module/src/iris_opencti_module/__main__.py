"""``python -m iris_opencti_module`` is ``iris-opencti``."""

import sys

from iris_opencti_module.tools.cli import main

sys.exit(main())
