"""``diffbench merge``: the shards of one comparison joined."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffbench.cli.common import add_overwrite

HELP = "join the shards of one comparison"


def add_arguments(merge: argparse.ArgumentParser) -> None:
    merge.add_argument("shards", type=Path, nargs="+", metavar="DIR", help="shard folders")
    merge.add_argument("--out", type=Path, required=True,
                       help="the merged output folder (not a shard; e.g. the shards' parent)")
    add_overwrite(merge, "an earlier merge in --out")


def run(args: argparse.Namespace) -> None:
    from diffbench.compare import merge

    results, files = merge(args.shards, args.out, overwrite=args.overwrite)
    print(f"{len(results)} rows from {len(args.shards)} shards; wrote "
          f"{', '.join(str(f) for f in files)}")
