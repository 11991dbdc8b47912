"""`python -m reset.judge`: see reset/judge/cli.py and `python -m reset.judge --help`."""

import sys

from reset.cli import run_cli
from reset.judge.cli import main

sys.exit(run_cli(main))
