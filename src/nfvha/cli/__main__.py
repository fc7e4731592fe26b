"""``python -m nfvha.cli``."""

import sys

from nfvha.cli import main

sys.exit(main())
