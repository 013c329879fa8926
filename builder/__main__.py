"""`python -m driptag`: the same as the `driptag` command."""

import sys

from .cli import main

sys.exit(main())
