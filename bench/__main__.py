"""python -m bench [suite ...] [--quick]: run benchmarks, print p50/p99 beside the floor."""
from __future__ import annotations

import argparse
import importlib

SUITES = ("runtime", "http_designs", "fast_path", "transport", "context", "scale", "wav2vec2")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("suites", nargs="*", metavar="suite", help=f"any of {', '.join(SUITES)}")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    unknown = set(args.suites) - set(SUITES)
    if unknown:
        parser.error(f"unknown suite {sorted(unknown)[0]!r}; choose from {', '.join(SUITES)}")
    for suite in args.suites or SUITES:
        importlib.import_module(f"bench.{suite}").run(quick=args.quick)
    from .report import main as report
    report()


if __name__ == "__main__":
    main()
