"""``python -m scenes --out DIR [--seed N] [--sites a,b] [--cells N]``: build a family-B scene set."""

import argparse
import sys

from .build import SITES, build


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m scenes", description=__doc__)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sites", default="", help=f"comma-separated, from {', '.join(SITES)} (default all)")
    p.add_argument("--cells", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    try:
        m = build(a.out, a.seed, [s for s in a.sites.split(",") if s] or None, a.cells, a.workers)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"family B: {m['n_strips']} strips, {m['n_slumps']} slump units, {m['n_lookalikes']} look-alikes "
          f"in {m['seconds']} s -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
