"""``diffbench compare``: the image-to-image benchmark (grid, table, plots, MLflow run)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from diffbench.cli.common import (
    add_data_dir,
    add_device,
    add_json,
    add_overwrite,
    add_seed,
    digits,
    emit,
    positive_int,
    print_error,
)
from diffbench.core.choices import COMPILE_MODES, NOISE_DEVICES

HELP = "the image-to-image benchmark: grid, table, plots, MLflow run"


def add_arguments(compare: argparse.ArgumentParser) -> None:
    compare.add_argument("--config", type=Path, metavar="YAML",
                         help="the comparison's config (default: configs/compare.yaml)")
    compare.add_argument("--set", dest="overrides", action="append", default=[],
                         metavar="KEY=VALUE",
                         help="override a config key; repeatable (default: none)")
    compare.add_argument("--checkpoints", metavar="DIR",
                         help="folder of trained checkpoints: every system's networks and the "
                              "judges (default: the config's value, the shipped checkpoints)")
    compare.add_argument("--out", metavar="DIR",
                         help="output folder (default: the config's value, results/)")
    compare.add_argument("--strength", type=float, action="append",
                         help="noise strength in (0, 1]; repeatable (default: the config's "
                              "values, 0.3 and 0.5)")
    compare.add_argument("--steps", type=positive_int, metavar="N",
                         help="step count of the few-step systems (DDIM, plug-ins; default: "
                              "each system's config value)")
    compare.add_argument("--num-images", type=digits, metavar="N",
                         help="test digits scored per system (default: the config's value)")
    add_device(compare)
    compare.add_argument("--compile", choices=COMPILE_MODES,
                         help="torch.compile the networks, or capture each call as one CUDA "
                              "graph (cudagraphs: CUDA, DDIM eta=0); default: eager")
    compare.add_argument("--noise-device", choices=NOISE_DEVICES,
                         help="where the seeded noise is drawn (default: device)")
    compare.add_argument("--tf32", action="store_true", default=None,
                         help="allow TF32 matmuls and convolutions (CUDA only; default off)")
    add_data_dir(compare)
    add_seed(compare)
    compare.add_argument("--match-information", type=float, metavar="A",
                         help="also compare every system where its own space's noised accuracy "
                              "equals A (in (0, 1); default: the config's value, off)")
    compare.add_argument("--shard", metavar="I/N",
                         help="run shard I of N (0-based) into <out>/shard-I-of-N; default: "
                              "from torchrun's RANK/WORLD_SIZE, a SLURM array or a Kubernetes "
                              "indexed job (join them with `diffbench merge`)")
    compare.add_argument("--resume", action="store_true",
                         help="continue the run in --out: keep the rows in its results.jsonl, "
                              "measure the rest (the config must be the same)")
    add_overwrite(compare, "an earlier run in --out (its results.jsonl and rows)")
    add_json(compare)


def run(args: argparse.Namespace) -> int:
    from diffbench.io.config import load_compare_config  # a bad config answers before the job

    config = load_compare_config(
        args.config, args.overrides, checkpoints=args.checkpoints, out=args.out,
        strengths=args.strength, steps=args.steps, num_images=args.num_images,
        device=args.device, data_dir=args.data_dir, seed=args.seed, compile=args.compile,
        noise_device=args.noise_device, tf32=args.tf32, match_information=args.match_information,
    )
    from diffbench.compare import run_compare
    from diffbench.results.shards import parse_shard, shard_dir, shard_from_env, shares_machine

    shard = parse_shard(args.shard) if args.shard else shard_from_env(os.environ)
    out = shard_dir(config.out, shard) if shard is not None else Path(config.out)
    try:
        results = run_compare(config, resume=args.resume, shard=shard, overwrite=args.overwrite,
                              shared_machine=shard is not None and shares_machine(os.environ))
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"interrupted (SIGINT); the rows measured are in "
                                f"{out}/results.jsonl: continue with --resume, or "
                                f"`diffbench report {out}` for their tables") from None
    failed = [f"{r['name']} at strength {r['strength']:g} ({r['failure']})"
              for r in results if r.get("failure")]
    files = ["results.jsonl", "results.json", "results.md", "i2i_comparison.png", "pareto.png"]
    emit(args, {"out": str(out), "files": files, "failed": failed, "rows": results},
         [f"wrote {out}/{', '.join(files)}"])
    if failed:
        print_error(f"{len(failed)} system(s) failed and stopped: {'; '.join(failed)}; the other "
                    f"systems' rows are complete (see results.md)")
        return 1
    return 0
