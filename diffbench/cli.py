"""The ``diffbench`` command. Bad input exits with status 2 and one ``error:`` line on stderr
(naming the value and what is allowed, no traceback), found before any long work starts."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import traceback
from pathlib import Path

from diffbench.config import KINDS
from diffbench.data import MAX_SCORED_DIGITS
from diffbench.errors import InputError
from diffbench.outputs import refuse_earlier_run
from diffbench.resources import checkpoints_dir
from diffbench.runtime import COMPILE_MODES, DEVICES, MAX_SEED, NOISE_DEVICES, resolve_device
from diffbench.sampling import SAMPLERS

EVALUATE_CHECKPOINTS = ["classifier", "pixel", "latent", "vae"]
MAX_SAMPLES = 10_000
"""Most samples `evaluate` generates from noise (its classifier's judgement of them is over a
test split of this size)."""


class UsageError(Exception):
    """A command line argparse rejects (its message is the `error:` line)."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one `error:` line and exit status 2 (via `main`)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def _seed(text: str) -> int:
    try:
        value: int | None = int(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed in [0, {MAX_SEED}], got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _digits(text: str) -> int:
    """A count of test digits to score: 1 to MAX_SCORED_DIGITS (the rest are the reference)."""
    value = _positive_int(text)
    if value > MAX_SCORED_DIGITS:
        raise argparse.ArgumentTypeError(
            f"expected at most {MAX_SCORED_DIGITS} digits (the test digits past them are the "
            f"held-out Frechet and KID reference), got {value}")
    return value


def _samples(text: str) -> int:
    """A count of generated samples: 1 to MAX_SAMPLES."""
    value = _positive_int(text)
    if value > MAX_SAMPLES:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_SAMPLES} samples, got {value}")
    return value


def _check_strengths(strengths: tuple[float, ...], option: str | None = None) -> None:
    """Each strength in (0, 1] and giving DDIM-50 and DDPM-1000 a step: an error (naming
    ``option`` when given) now, not after minutes of work."""
    from diffbench.sampling import DEFAULT_STEPS, img2img_num_steps

    for strength in strengths:
        try:
            img2img_num_steps(DEFAULT_STEPS, strength)
        except InputError as error:
            if option is None:
                raise
            raise UsageError(f"{option}: {error}") from None


def _overwrite(command: argparse.ArgumentParser, what: str) -> None:
    command.add_argument("--overwrite", action="store_true",
                         help=f"replace {what} (without it, an earlier run is refused)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="diffbench",
        description="Compare DDPM, DDIM and latent diffusion on MNIST image-to-image translation.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="DDPM-1000 vs DDIM-50 image-to-image on real digits with a training-free denoiser",
    )
    demo.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    demo.add_argument("--data-dir", help="MNIST folder (default: $DIFFBENCH_DATA_DIR or download)")
    demo.add_argument("--num-images", type=_positive_int, default=8)
    demo.add_argument(
        "--num-references",
        type=_positive_int,
        default=10_000,
        help="training digits the empirical denoiser knows",
    )
    demo.add_argument(
        "--strength",
        type=float,
        action="append",
        help="noise strength in (0, 1]; repeatable (default 0.3 and 0.5)",
    )
    demo.add_argument("--seed", type=_seed, default=0)

    train = commands.add_parser("train", help="train one model (a kind below)")
    train.add_argument("kind", choices=KINDS)
    train.add_argument(
        "--config", type=Path, help="YAML config (default: configs/train_<kind>.yaml)"
    )
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key (dotted for nested keys); repeatable")
    train.add_argument("--steps", type=_positive_int)
    train.add_argument("--batch-size", type=_positive_int)
    train.add_argument("--out", help="folder for the checkpoint, its training state and card")
    train.add_argument("--data-dir", help="MNIST folder (default: $DIFFBENCH_DATA_DIR or download)")
    train.add_argument("--device", choices=DEVICES)
    train.add_argument("--seed", type=_seed)
    train.add_argument("--resume", action="store_true",
                       help="continue from the training state in --out")
    _overwrite(train, "a checkpoint of the same name in --out")
    train.add_argument("--stop-at", type=_positive_int, metavar="STEP",
                       help="stop after this step, checkpointed (continue later with --resume)")

    evaluate = commands.add_parser("evaluate", help="fidelity of the shipped checkpoints as JSON")
    evaluate.add_argument("--checkpoints", type=Path, default=None,
                          help="default: the shipped checkpoints")
    evaluate.add_argument("--out", type=Path, default=Path("results/evaluate.json"))
    evaluate.add_argument("--data-dir", help="MNIST folder (default: $DIFFBENCH_DATA_DIR)")
    evaluate.add_argument("--device", choices=DEVICES, default="auto")
    evaluate.add_argument("--num-images", type=_digits, default=1000,
                          help="test digits per system at the main strength (0.3)")
    evaluate.add_argument("--ddpm-images", type=_digits, default=256,
                          help="test digits for pixel DDPM-1000 at the main strength")
    evaluate.add_argument("--sweep-images", type=_digits, default=128,
                          help="test digits per system at the other strengths")
    evaluate.add_argument("--sweep-ddpm-images", type=_digits, default=32)
    evaluate.add_argument("--sweep", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 0.9],
                          metavar="S", help="strengths of the sweep (default 0.1 0.3 0.5 0.7 0.9)")
    evaluate.add_argument("--generation-samples", type=_samples, default=1000)
    evaluate.add_argument("--seed", type=_seed, default=0)
    evaluate.add_argument("--samplers", nargs="+", choices=list(SAMPLERS), metavar="NAME",
                          help=f"samplers to evaluate in each space (default: all: "
                               f"{' '.join(SAMPLERS)})")
    _overwrite(evaluate, "an existing --out file")
    evaluate.add_argument("--update-cards", action="store_true",
                          help="write the numbers into the model cards beside the checkpoints")

    shapes = commands.add_parser(
        "shapes", help="the latent-shape sweep: one folder per latent shape's trained system")
    shapes.add_argument("folders", type=Path, nargs="+", metavar="FOLDER",
                        help="holds vae, latent and latent_noisy_classifier .safetensors")
    shapes.add_argument("--checkpoints", type=Path, default=None,
                        help="the classifiers and pixel UNet to compare against")
    shapes.add_argument("--out", type=Path, default=Path("results/latent_shapes.md"),
                        help="Markdown table; the .png plot and .json numbers go beside it")
    shapes.add_argument("--num-images", type=_digits, default=512)
    shapes.add_argument("--rounds", type=_positive_int, default=7,
                        help="timed calls per system (batch 64)")
    shapes.add_argument("--data-dir", help="MNIST folder (default: $DIFFBENCH_DATA_DIR)")
    shapes.add_argument("--device", choices=DEVICES, default="auto")
    shapes.add_argument("--seed", type=_seed, default=0)
    _overwrite(shapes, "an existing --out table and the .png and .json beside it")

    compare = commands.add_parser(
        "compare", help="the image-to-image benchmark: grid, table, plots, MLflow run"
    )
    compare.add_argument("--config", type=Path, help="YAML (default: configs/compare.yaml)")
    compare.add_argument("--set", dest="overrides", action="append", default=[],
                         metavar="KEY=VALUE", help="override a config key; repeatable")
    compare.add_argument("--checkpoints", help="folder of trained checkpoints")
    compare.add_argument("--out", help="output folder (default: results/)")
    compare.add_argument("--strength", type=float, action="append",
                         help="noise strength in (0, 1]; repeatable (default: 0.3 and 0.5)")
    compare.add_argument("--steps", type=_positive_int,
                         help="step count of the few-step systems (DDIM, plug-ins)")
    compare.add_argument("--num-images", type=_digits, help="test digits scored per run")
    compare.add_argument("--device", choices=DEVICES)
    compare.add_argument("--compile", choices=COMPILE_MODES,
                         help="torch.compile the networks, or capture each call as one CUDA "
                              "graph (cudagraphs: CUDA, DDIM eta=0); default: eager")
    compare.add_argument("--noise-device", choices=NOISE_DEVICES,
                         help="where the seeded noise is drawn (default: device)")
    compare.add_argument("--tf32", action="store_true", default=None,
                         help="allow TF32 matmuls and convolutions (CUDA only; default off)")
    compare.add_argument("--data-dir", help="MNIST folder (default: $DIFFBENCH_DATA_DIR)")
    compare.add_argument("--seed", type=_seed)
    compare.add_argument("--match-information", type=float, metavar="A",
                         help="also compare every system where its own space's noised accuracy "
                              "equals A (in (0, 1))")
    compare.add_argument("--shard", metavar="I/N",
                         help="run shard I of N (0-based) into <out>/shard-I-of-N; default: "
                              "from torchrun's RANK/WORLD_SIZE, a SLURM array or a Kubernetes "
                              "indexed job (join them with `diffbench merge`)")
    compare.add_argument("--resume", action="store_true",
                         help="continue the run in --out: keep the rows in its results.jsonl, "
                              "measure the rest (the config must be the same)")
    _overwrite(compare, "an earlier run in --out (its results.jsonl and rows)")

    report = commands.add_parser(
        "report", help="rebuild results.json, results.md, the grid and plots from a run's "
                       "results.jsonl (finished, partial or killed)")
    report.add_argument("out", type=Path, metavar="DIR", help="a compare output folder")
    report.add_argument("--reference", metavar="NAME",
                        help="pair every row against this system instead of the run's "
                             "reference (its pixel name; LDM- + it in latents)")
    report.add_argument("--to", type=Path, metavar="DIR",
                        help="write the reports here instead of into DIR")

    merge = commands.add_parser("merge", help="join the shards of one comparison")
    merge.add_argument("shards", type=Path, nargs="+", metavar="DIR", help="shard folders")
    merge.add_argument("--out", type=Path, required=True,
                       help="the merged output folder (not a shard; e.g. the shards' parent)")
    _overwrite(merge, "an earlier merge in --out")

    ab = commands.add_parser(
        "ab", help="base against head, speed and fidelity, in one job: the regression gate "
                   "(exit 0 certified, 1 regression, 2 bad input, 3 no verdict)")
    ab.add_argument("--base", required=True, metavar="REV",
                    help="the revision to compare against (a commit, branch or tag; or a clean "
                         "checkout folder)")
    ab.add_argument("--head", metavar="REV", help="default: the working tree")
    ab.add_argument("--cases", nargs="+", default=["quick"], metavar="CASE",
                    help="quick (default), all, or case names (see diffbench.cases)")
    ab.add_argument("--budget-s", type=float, default=None,
                    help="seconds of timed pairs beyond each case's first rounds, for all "
                         "cases together (default 60)")
    ab.add_argument("--out", type=Path, default=Path("results/ab"), help="output folder")
    ab.add_argument("--threads", type=_positive_int, default=1,
                    help="torch threads of each worker (default 1)")
    ab.add_argument("--seed", type=_seed, help="the pair order's seed (default: drawn, recorded)")
    ab.add_argument("--checkpoints", type=Path,
                    help="the checkpoints both versions load (default: fixtures/checkpoints)")
    ab.add_argument("--processes", type=_positive_int, default=None, metavar="P",
                    help="worker pairs per version (default 8): the interval is over them")

    history = commands.add_parser(
        "history", help="each benchmark's median over commits, with change points, as a PNG")
    history.add_argument("--storage", type=Path, default=Path(".benchmarks"),
                         help="pytest-benchmark's storage folder (default .benchmarks)")
    history.add_argument("--out", type=Path, default=Path("results/history.png"))
    history.add_argument("--match", help="only cases whose name contains this")
    return parser


def _ab(args: argparse.Namespace) -> int:
    from diffbench import ab_report
    from diffbench.ab import DEFAULT_BUDGET_S, run_ab
    from diffbench.paired import PROCESSES

    budget = DEFAULT_BUDGET_S if args.budget_s is None else args.budget_s
    # SIGTERM (CI's timeout, kill) unwinds like SIGINT: the base's worktree is removed and the
    # workers are told to quit.
    previous = signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
    try:
        result = run_ab(args.base, args.head, args.cases, budget, args.out,
                        threads=args.threads, seed=args.seed, checkpoints=args.checkpoints,
                        processes=args.processes or PROCESSES)
    except InputError:
        raise
    except Exception as error:  # a crash gives no verdict: exit 3, not 1 (a regression)
        log = args.out / "crash.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(traceback.format_exc())
        _error(f"no verdict: diffbench ab crashed ({type(error).__name__}: {error}); the "
               f"traceback is in {log}")
        return ab_report.EXIT_NO_VERDICT
    finally:
        signal.signal(signal.SIGTERM, previous)
    for entry in result["cases"]:
        print(ab_report.case_line(entry))
    print(f"wrote {args.out}/ab.json, ab.md")
    status, message = ab_report.exit_status(result)
    if status:
        _error(message)
    return status


def _history(args: argparse.Namespace) -> None:
    from diffbench.history import draw_history, load_history

    series = load_history(args.storage, args.match)
    draw_history(series, args.out)
    print(f"wrote {args.out}")


def _compare(args: argparse.Namespace) -> int:
    from diffbench.compare import run_compare
    from diffbench.config import load_compare_config

    config = load_compare_config(
        args.config, args.overrides, checkpoints=args.checkpoints, out=args.out,
        strengths=args.strength, steps=args.steps, num_images=args.num_images,
        device=args.device, data_dir=args.data_dir, seed=args.seed, compile=args.compile,
        noise_device=args.noise_device, tf32=args.tf32, match_information=args.match_information,
    )
    from diffbench.shards import parse_shard, shard_from_env, shares_machine

    shard = parse_shard(args.shard) if args.shard else shard_from_env(os.environ)
    try:
        results = run_compare(config, resume=args.resume, shard=shard, overwrite=args.overwrite,
                              shared_machine=shard is not None and shares_machine(os.environ))
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"interrupted (SIGINT); the rows measured are in "
                                f"{config.out}/results.jsonl: continue with --resume, or "
                                f"`diffbench report {config.out}` for their tables") from None
    print(f"wrote {config.out}/results.jsonl, results.json, results.md, i2i_comparison.png, "
          f"pareto.png")
    failed = [f"{r['name']} at strength {r['strength']:g} ({r['failure']})"
              for r in results if r.get("failure")]
    if failed:
        _error(f"{len(failed)} system(s) failed and stopped: {'; '.join(failed)}; the other "
               f"systems' rows are complete (see results.md)")
        return 1
    return 0


def _merge(args: argparse.Namespace) -> None:
    from diffbench.compare import merge

    results, files = merge(args.shards, args.out, overwrite=args.overwrite)
    print(f"{len(results)} rows from {len(args.shards)} shards; wrote "
          f"{', '.join(str(f) for f in files)}")


def _report(args: argparse.Namespace) -> None:
    from diffbench.compare import write_reports
    from diffbench.rowstore import RowStore

    results, files = write_reports(RowStore.read(args.out), args.reference, args.to)
    print(f"{len(results)} rows; wrote {', '.join(str(f) for f in files)}")


def _evaluate(args: argparse.Namespace) -> None:
    from diffbench.checkpoints import check_writable_dir, load_model, require_checkpoints
    from diffbench.evaluate import evaluate, write_report
    device = str(resolve_device(args.device))
    _check_strengths(tuple(args.sweep), "--sweep")
    args.checkpoints = args.checkpoints or checkpoints_dir()
    if args.out.is_dir():
        raise UsageError(f"--out {args.out} is a folder; allowed: a file path for the JSON report")
    refuse_earlier_run(args.out, [args.out], overwrite=args.overwrite)
    check_writable_dir(args.out.parent)
    names = [f"{name}.safetensors" for name in EVALUATE_CHECKPOINTS]
    require_checkpoints(args.checkpoints, names)
    for name in names:  # each one loads into its model now, not after minutes of work
        load_model(args.checkpoints / name)
    if args.update_cards:
        check_writable_dir(args.checkpoints)
    report = evaluate(
        args.checkpoints, args.data_dir, device, args.num_images,
        args.ddpm_images, sweep_images=args.sweep_images,
        sweep=tuple(args.sweep), sweep_ddpm_images=args.sweep_ddpm_images,
        generation_samples=args.generation_samples, seed=args.seed,
        samplers=tuple(args.samplers) if args.samplers else None,
    )
    write_report(report, args.out)
    if args.update_cards:
        from diffbench.evaluate import update_cards

        update_cards(report, args.checkpoints)
    for goal in report["goals"]:
        mark = "met " if goal["met"] else "MISS"
        print(f"{mark}  {goal['goal']}: {goal['value']:.4f} (goal {goal['target']})")
    print(f"wrote {args.out}")


def _shapes(args: argparse.Namespace) -> None:
    from diffbench.checkpoints import check_writable_dir, require_checkpoints
    from diffbench.shapes import FILES, run_sweep, write_sweep

    if args.out.suffix != ".md":
        raise UsageError(f"--out {args.out}: allowed: a .md file path")
    refuse_earlier_run(args.out, [args.out.with_suffix(s) for s in (".md", ".json", ".png")],
                       overwrite=args.overwrite)
    check_writable_dir(args.out.parent)
    args.checkpoints = args.checkpoints or checkpoints_dir()
    require_checkpoints(args.checkpoints, ["classifier.safetensors", "pixel.safetensors"])
    for folder in args.folders:
        require_checkpoints(folder, list(FILES))
    sweep = run_sweep(args.folders, args.checkpoints, args.num_images, rounds=args.rounds,
                      device=str(resolve_device(args.device)), data_dir=args.data_dir,
                      seed=args.seed)
    for path in write_sweep(sweep, args.out):
        print(f"wrote {path}")


def _train(args: argparse.Namespace) -> None:
    from diffbench.config import load_train_config
    from diffbench.train import train

    config = load_train_config(
        args.kind, args.config, args.overrides, steps=args.steps, batch_size=args.batch_size,
        out=args.out, data_dir=args.data_dir, device=args.device, seed=args.seed,
    )
    train(config, resume=args.resume, stop_at=args.stop_at, command=args.command_line,
          overwrite=args.overwrite)


def _demo(args: argparse.Namespace) -> None:
    from diffbench.checkpoints import check_writable_dir
    from diffbench.demo import run_demo

    strengths = tuple(args.strength or (0.3, 0.5))
    _check_strengths(strengths)
    check_writable_dir(args.out)
    results = run_demo(
        args.out,
        args.data_dir,
        args.num_images,
        args.num_references,
        strengths,
        args.seed,
    )
    print(f"{'sampler':<10} {'strength':>8} {'steps':>6} {'sec/image':>10} {'mse':>8}")
    for r in results:
        row = f"{r.sampler:<10} {r.strength:>8.2f} {r.steps:>6} {r.sec_per_image:>10.4f}"
        print(f"{row} {r.mse:>8.4f}")
    print(f"wrote {args.out / 'demo_grid.png'}")


def _error(message: object) -> None:
    """Print ``message`` as one ``error:`` line on stderr."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run one command; 0 on success, 2 for bad input (:class:`InputError`), 1 with the
    traceback for anything else, 128 + N when stopped by signal N."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
        args.command_line = shlex.join(["diffbench", *argv])
        commands = {"demo": _demo, "train": _train, "evaluate": _evaluate, "compare": _compare,
                    "shapes": _shapes, "ab": _ab, "history": _history, "report": _report,
                    "merge": _merge}
        status = commands[args.command](args)
    except (UsageError, InputError) as error:  # bad input only: MNISTNotFoundError included
        _error(error)
        return 2
    except KeyboardInterrupt as interrupt:
        _error(str(interrupt) or "interrupted (SIGINT); files already written are complete")
        return 128 + 2
    except OSError as error:  # the machine, not the input: a full disk, a vanished folder
        _error(f"{error}; files already written are complete (every write is atomic)")
        return 1
    except Exception as error:  # a bug, CUDA out of memory, ...: keep the traceback (exit 1)
        status = getattr(error, "exit_status", None)  # except train's TrainingInterrupted
        if status is None:
            raise
        _error(error)
        return status
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
