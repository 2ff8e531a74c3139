"""The ``dic`` command line.

``dic demo`` will run the embedded three-node demo (the demo issue); until then it says so.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dic", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the embedded three-node demo on this machine")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        print(
            "dic demo: not yet. The embedded demo lands with the demo/CLI/Helm issue; "
            "`make bench` runs the MPC engine benchmark on three local TLS processes today."
        )
        return 0
    return 2  # pragma: no cover - argparse enforces the choices


if __name__ == "__main__":
    sys.exit(main())
