"""`python -m jaxtiny.cli`: the `jaxtiny` command without the console script."""

import sys

from jaxtiny.cli import main

sys.exit(main())
