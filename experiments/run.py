#!/usr/bin/env python3
"""ringlab experiments entry point: `python3 experiments/run.py quick`.

See experiments/README.md; `run.py --help` lists the commands.
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from ringlab_exp.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
