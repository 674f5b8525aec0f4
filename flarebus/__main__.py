"""``python -m flarebus``: the same as the ``flarebus`` console script."""

import sys

from flarebus.cli.main import main

sys.exit(main())
