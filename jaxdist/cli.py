"""The ``jaxdist`` command."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jaxdist`` console script."""
    import jaxdist
    from jaxdist import compressors

    parser = argparse.ArgumentParser(prog="jaxdist", description=jaxdist.__doc__.splitlines()[0])
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    args = parser.parse_args(argv)
    if args.version:
        print(jaxdist.__version__)
        return 0
    print(f"jaxdist {jaxdist.__version__}")
    print("compressors:", ", ".join(compressors.__all__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
