"""``python -m search.cli``: the ``emotune`` command."""

import sys

from search.cli.app import main

sys.exit(main())
