"""`python -m reset.judge`: see reset/judge/cli.py and `python -m reset.judge --help`."""

import sys

from reset.judge.cli import main

sys.exit(main())
