"""``python -m bert``: the same as the ``bert`` command."""

import sys

from bert.cli.commands import main

sys.exit(main())
