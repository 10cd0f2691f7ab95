"""`python -m ringan`: the `ringan` command."""

import sys

from .cli import main

sys.exit(main())
