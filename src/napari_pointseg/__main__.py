"""`python -m napari_pointseg` = `pointseg`."""

import sys

from .cli import main

sys.exit(main())
