"""``python -m tinymbv2 ...``: the same as the ``tinymbv2`` command."""
import sys

from .cli import main

sys.exit(main())
