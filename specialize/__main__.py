"""`python -m specialize`: the `specialize` command, where its console script is not on PATH."""

import sys

from specialize.cli import main

sys.exit(main())
