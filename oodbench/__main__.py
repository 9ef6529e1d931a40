"""``python -m oodbench``: the command line, as torchrun's ``-m oodbench`` starts it."""

import sys

from oodbench.cli import main

sys.exit(main())
