"""The ``crystallize`` command. Until the full CLI lands (issue #5) it runs a Python file's experiment."""

from __future__ import annotations

import argparse
import logging
import runpy
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crystallize", description="Run Crystallize experiments.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run a Python file that defines and runs an experiment")
    run.add_argument("target", help="path to a .py file")
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if args.command == "run":
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        runpy.run_path(args.target, run_name="__main__")
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
