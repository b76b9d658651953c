"""``python -m pizzagpt_magic``: the command line (see ``pizzagpt_magic.cli``)."""

import sys

from .cli import main

sys.exit(main())
