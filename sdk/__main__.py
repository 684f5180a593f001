"""``python -m sdc_sdk ...`` is the ``sd-chinese`` command (see cli.py)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
