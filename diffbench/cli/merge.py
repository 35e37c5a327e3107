"""``diffbench merge``: the shards of one comparison joined."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffbench.cli.common import add_json, add_overwrite, emit

HELP = "join the shards of one comparison"


def add_arguments(merge: argparse.ArgumentParser) -> None:
    merge.add_argument("shards", type=Path, nargs="+", metavar="DIR", help="shard folders")
    merge.add_argument("--out", type=Path, required=True, metavar="DIR",
                       help="the merged output folder (not a shard; e.g. the shards' parent; "
                            "no default: required)")
    add_overwrite(merge, "an earlier merge in --out")
    add_json(merge)


def run(args: argparse.Namespace) -> None:
    from diffbench.compare import merge

    results, files = merge(args.shards, args.out, overwrite=args.overwrite)
    emit(args, {"rows": len(results), "shards": len(args.shards),
                "files": [str(f) for f in files], "results": results},
         [f"{len(results)} rows from {len(args.shards)} shards; wrote "
          f"{', '.join(str(f) for f in files)}"])
