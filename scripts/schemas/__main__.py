"""Schema command: write schemas/ from the models, or with --check exit 1 when a file differs.

python -m scripts.schemas [--check]
"""

from __future__ import annotations

import argparse
import sys

from scripts.schemas.files import SCHEMA_DIR, differing, write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.schemas",
        description="Write the JSON Schemas under schemas/ from the contract's models.",
    )
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file differs")
    args = parser.parse_args(argv)
    if args.check:
        stale = differing()
        for name in stale:
            print(f"{SCHEMA_DIR / name} differs from its model: run python -m scripts.schemas", file=sys.stderr)  # noqa: T201
        return 1 if stale else 0
    for path in write():
        print(f"wrote {path}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
