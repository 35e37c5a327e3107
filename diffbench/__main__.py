"""``python -m diffbench`` (and ``torchrun -m diffbench``) runs the CLI."""

import sys

from diffbench.cli import main

sys.exit(main())
