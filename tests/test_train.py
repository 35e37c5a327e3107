"""Training: every kind through the CLI on a few hundred real digits, MLflow, resume, torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from diffbench.cli import main
from diffbench.io.checkpoints import load_checkpoint, load_metadata, load_model
from diffbench.io.config import ConfigError, TrainConfig, load_train_config
from diffbench.io.data import KNOWN_MD5
from diffbench.models import VAE, Classifier, UNet, UNetConfig
from diffbench.train import (
    Distributed,
    batch_indices,
    fit,
    learning_rate_factor,
    prepare_run,
    training_budget_rows,
    update_ema,
)

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--steps",
    "3",
    "--batch-size",
    "8",
    "--set",
    "train_images=300",
    "--device",
    "cpu",
    "--set",
    "log_every=1",
]
MODEL_CLASSES = {"pixel": UNet, "latent": UNet, "vae": VAE, "classifier": Classifier}


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    """One local MLflow store for the module (creating a store takes seconds)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        yield uri
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def trained(tracking_uri, tmp_path_factory, mnist_dir):
    """Train each kind for 3 steps into one folder (the latent model on the VAE's latents)."""
    out = tmp_path_factory.mktemp("runs")
    for kind in ("vae", "pixel", "classifier", "latent"):
        extra = ["--set", f"vae_checkpoint={out / 'vae.safetensors'}"] if kind == "latent" else []
        if kind != "classifier":
            extra += ["--set", "model.base_channels=8"]  # tiny networks: the loop is under test
        assert (
            main(
                [
                    "train",
                    kind,
                    "--out",
                    str(out),
                    "--data-dir",
                    str(mnist_dir),
                    "--set",
                    f"experiment=test-train-{kind}",
                    *TINY,
                    *extra,
                ]
            )
            == 0
        )
    return out


@pytest.mark.parametrize("kind", ["pixel", "vae", "latent", "classifier"])
def test_tiny_run_writes_a_loadable_checkpoint(trained, kind):
    tensors, metadata = load_checkpoint(trained / f"{kind}.safetensors")
    assert metadata["kind"] == kind and metadata["step"] == 3
    assert metadata["train_seconds"] > 0 and metadata["images_per_second"] > 0
    assert metadata["dataset_md5"] == {  # the files read: the shipped subset and test split
        name: KNOWN_MD5[name] for name in (
            "train-10k-images-idx3-ubyte.gz",
            "train-10k-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        )
    }
    assert metadata["environment"]["torch"] == torch.__version__
    assert "git_commit" in metadata["environment"]
    model, _ = load_model(trained / f"{kind}.safetensors")  # strict: no missing/extra weight
    assert isinstance(model, MODEL_CLASSES[kind])
    assert metadata["stats"]["parameters"] == sum(p.numel() for p in model.parameters())
    card = (trained / f"{kind}.md").read_text()
    assert f"diffbench train {kind}" in card and "| steps | 3 |" in card
    assert (trained / f"{kind}_samples.png").stat().st_size > 0


@pytest.mark.parametrize("kind", ["pixel", "vae", "latent", "classifier"])
def test_tiny_run_is_an_mlflow_run_with_params_metrics_and_timings(trained, tracking_uri, kind):
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(f"test-train-{kind}")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["steps"] == "3" and run.data.params["batch_size"] == "8"
    assert int(run.data.params["model.parameters"]) > 0
    for metric in (
        "loss",
        "images_per_second",
        "lr",
        "train_seconds",
        "cpu_seconds",
        "time/train_s",
        "time/epoch_s",
        "time/save_checkpoint_s",
        "time/sample_s",
    ):
        assert metric in run.data.metrics, metric
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 3
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {f"{kind}.md", f"{kind}_samples.png"} <= artifacts


def test_vae_measures_its_latent_scale_factor(trained):
    tensors, _ = load_checkpoint(trained / "vae.safetensors")
    assert float(tensors["scale_factor"]) != 1.0
    latent_meta = load_metadata(trained / "latent.safetensors")
    assert latent_meta["vae_checkpoint"].endswith("vae.safetensors")
    assert latent_meta["latent_shape"] == [4, 14, 14]  # the shipped shape (configs/train_vae.yaml)


def test_resume_continues_to_the_same_weights(tracking_uri, tmp_path, mnist_dir):
    """Stopped at step 3 and resumed to 6 equals 6 steps straight: weights, EMA, optimizer."""
    common = [
        "train",
        "pixel",
        "--data-dir",
        str(mnist_dir),
        "--steps",
        "6",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--set",
        "train_images=40",
        "--set",
        "experiment=test-resume",
        "--set",
        "log_every=1",
        "--set",
        "warmup_steps=2",
        "--set",
        "model.base_channels=8",
    ]
    assert main([*common, "--out", str(tmp_path / "straight")]) == 0
    assert main([*common, "--out", str(tmp_path / "resumed"), "--stop-at", "3"]) == 0
    assert load_metadata(tmp_path / "resumed" / "pixel.safetensors")["step"] == 3
    assert main([*common, "--out", str(tmp_path / "resumed"), "--resume"]) == 0
    for name in ("pixel.safetensors", "pixel.state.safetensors"):
        straight, meta = load_checkpoint(tmp_path / "straight" / name)
        resumed, resumed_meta = load_checkpoint(tmp_path / "resumed" / name)
        assert resumed_meta["step"] == meta["step"] == 6
        assert straight.keys() == resumed.keys()
        for key in straight:
            assert torch.equal(straight[key], resumed[key]), (name, key)
    # one MLflow run for the stopped and resumed training: the state holds its id, the loss
    # curve goes on from step 4, and it ends FINISHED
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("test-resume").experiment_id])
    assert len(runs) == 2  # straight, and stopped-then-resumed
    run_id = load_metadata(tmp_path / "resumed" / "pixel.state.safetensors")["mlflow_run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["resumed"] == "True"
    steps = [m.step for m in client.get_metric_history(run_id, "loss")]
    assert steps == [1, 2, 3, 4, 5, 6]
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "mnist-train" and dataset.dataset.source_type == "local"
    assert {t.key: t.value for t in dataset.tags}["mlflow.data.context"] == "training"


def test_two_process_torchrun_on_cpu(tmp_path, mnist_dir):
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "-m",
            "diffbench",
            "train",
            "pixel",
            "--steps",
            "400",
            "--batch-size",
            "4",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "ddp"),
            "--data-dir",
            str(mnist_dir),
            "--set",
            "train_images=64",
            "--set",
            "model.base_channels=8",
            "--set",
            "experiment=test-ddp",
            "--set",  # a CPU budget counted over both processes ends the run early
            "cpu_budget_s=1.0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metadata = load_metadata(tmp_path / "ddp" / "pixel.safetensors")
    # Both ranks stopped at the same step (else DDP's gradient all-reduce would hang), once
    # their CPU seconds together reached the budget.
    assert metadata["world_size"] == 2 and 1 <= metadata["step"] < 400
    assert metadata["cpu_seconds"] >= 1.0
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("test-ddp").experiment_id])
    assert len(runs) == 1  # only rank 0 tracks


def test_shards_are_disjoint_and_cover_each_epoch():
    config = TrainConfig(kind="pixel", steps=10, batch_size=5)
    seen = []
    for rank in (0, 1):
        ddp = Distributed(rank=rank, world_size=2)
        seen += [batch_indices(20, config, ddp, step) for step in range(2)]
    assert sorted(torch.cat(seen).tolist()) == list(range(20))
    # The next epoch is a different permutation of the same examples.
    later = batch_indices(20, config, Distributed(0, 2), 2)
    assert not torch.equal(later, seen[0])


def test_learning_rate_warms_up_then_decays_to_the_floor():
    config = TrainConfig(kind="pixel", steps=100, warmup_steps=10, min_lr_ratio=0.1)
    factors = [learning_rate_factor(step, config) for step in range(101)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert factors[100] == pytest.approx(0.1)


def test_learning_rate_schedule_follows_the_cpu_budget():
    """With a CPU budget the cosine runs on the further of step and budget progress: a run the
    budget ends early still reaches the floor, and one that steps end is the plain schedule."""
    config = TrainConfig(kind="pixel", steps=100, warmup_steps=10, min_lr_ratio=0.1,
                         cpu_budget_s=60)
    assert learning_rate_factor(40, config, budget_used=1.0) == pytest.approx(0.1)
    halfway = learning_rate_factor(10, config, budget_used=0.5)
    assert halfway == pytest.approx(0.1 + 0.9 * 0.5)  # cos(pi/2) = 0: halfway down
    assert learning_rate_factor(55, config, budget_used=0.0) == learning_rate_factor(55, config)
    assert learning_rate_factor(5, config, budget_used=0.9) == pytest.approx(0.6)  # warm-up


def test_cpu_budget_ends_the_run_and_the_card_says_so(tmp_path, mnist_dir):
    overrides = [f"data_dir={mnist_dir}", f"out={tmp_path}", "train_images=16", "batch_size=4",
                 "model.base_channels=8", "cpu_budget_s=1e-6", "threads=1", "steps=50"]
    config = load_train_config("pixel", overrides=overrides)
    run = prepare_run(config, torch.device("cpu"), Distributed(), resume=False, command="test")
    fit(run, config.steps)
    assert run.progress.step == 1  # checked between steps: one step, then the budget is spent
    assert run.progress.cpu_seconds > 0
    facts = dict(run.metadata, step=run.progress.step, cpu_seconds=run.progress.cpu_seconds)
    rows = training_budget_rows(facts)
    assert rows[0].startswith("| training CPU time |") and "(1 thread(s))" in rows[0]
    assert "ended by the budget" in rows[1]  # (under torchrun: test_two_process_torchrun_on_cpu)


def test_min_snr_weights_cap_the_nearly_clean_steps():
    """Hang et al. 2023, eq. 8 for eps-prediction: min(SNR_t, gamma) / SNR_t."""
    from diffbench.sampling.schedule import NoiseSchedule
    from diffbench.train.tasks import min_snr_weights

    schedule = NoiseSchedule.linear(1000)
    t = torch.arange(1000)
    weights = min_snr_weights(schedule, t, 5.0)
    snr = schedule.alphas_cumprod / (1 - schedule.alphas_cumprod)
    assert torch.equal(weights[snr <= 5], torch.ones(int((snr <= 5).sum()), dtype=weights.dtype))
    torch.testing.assert_close(weights[snr > 5], 5 / snr[snr > 5])
    assert bool((weights > 0).all()) and bool((weights.diff() >= 0).all())  # grows with t to 1
    assert weights[0] < 1e-3 and weights[-1] == 1


def test_min_snr_loss_reweights_the_simple_loss(tmp_path, mnist_dir):
    overrides = [f"data_dir={mnist_dir}", f"out={tmp_path}", "train_images=16",
                 "model.base_channels=8"]
    losses = {}
    for gamma in (None, 1e9, 5.0):
        config = load_train_config("pixel", overrides=[*overrides, f"min_snr_gamma={gamma}"
                                                       if gamma else "min_snr_gamma=null"])
        run = prepare_run(config, torch.device("cpu"), Distributed(), resume=False, command="t")
        torch.manual_seed(0)
        run.task.model.load_state_dict(UNet(config.build_model_config()).state_dict())
        with torch.no_grad():
            losses[gamma] = float(run.task.loss(run.task.model, run.task.inputs[:16],
                                                run.task.labels[:16],
                                                torch.Generator().manual_seed(1)))
    assert losses[1e9] == pytest.approx(losses[None], rel=1e-6)  # every weight is 1
    assert 0 < losses[5.0] < losses[None]  # the nearly clean examples weigh less
    with pytest.raises(ConfigError, match="min_snr_gamma"):
        load_train_config("pixel", overrides=["min_snr_gamma=0"])


def test_ema_update_moves_toward_the_model():
    ema, model = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = ema.weight.detach().clone()
    update_ema(ema, model, decay=0.9, step=1000)
    assert torch.allclose(ema.weight, 0.9 * before + 0.1 * model.weight)
    update_ema(ema, model, decay=0.999, step=0)  # warm-up: decay' = 1/10
    assert torch.allclose(
        ema.weight, 0.1 * (0.9 * before + 0.1 * model.weight) + 0.9 * model.weight
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "steps=-1"], "steps: Input should be greater than or equal to 1 (got -1)"),
        (["--set", "lr=fast"], "lr: Input should be a valid number"),
        (["--set", "model.width=3"], "model: unknown key(s) ['width'] for UNetConfig"),
        (["--set", "colour=red"], "colour: Extra inputs are not permitted"),
        (["--set", "steps"], "--set expects key=value, got 'steps'"),
        (["--config", "nowhere.yaml"], "config file nowhere.yaml does not exist"),
    ],
)
def test_bad_config_is_one_clear_error(args, message, capsys):
    assert main(["train", "pixel", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_resume_without_state_and_latent_without_vae_are_clear_errors(tmp_path, mnist_dir, capsys):
    small = ["--data-dir", str(mnist_dir), "--set", "train_images=20", "--batch-size", "4"]
    assert main(["train", "pixel", "--resume", "--out", str(tmp_path), *small]) == 2
    assert "--resume: no training state at" in capsys.readouterr().err
    assert main(["train", "latent", "--set", "vae_checkpoint=null", "--out", str(tmp_path),
                 *small]) == 2
    assert "needs vae_checkpoint" in capsys.readouterr().err


def test_config_file_then_overrides_then_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("kind: pixel\nsteps: 10\nbatch_size: 16\nmodel: {base_channels: 16}\n")
    config = load_train_config(
        "pixel", path, ["steps=20", "model.channel_mults=[1, 2]"], batch_size=4, seed=None
    )
    assert (config.steps, config.batch_size, config.seed) == (20, 4, 0)
    assert config.build_model_config().channel_mults == (1, 2)
    assert config.build_model_config().base_channels == 16
    with pytest.raises(ConfigError, match="is for kind 'pixel', not 'vae'"):
        load_train_config("vae", path)


def test_batch_indices_are_built_on_the_device():
    config = TrainConfig(kind="pixel", steps=10, batch_size=4)
    on_cpu = batch_indices(20, config, Distributed(), 3)
    again = batch_indices(20, config, Distributed(), 3, torch.device("cpu"))
    assert torch.equal(on_cpu, again) and again.device.type == "cpu"


@pytest.mark.parametrize("grad", [True, False], ids=["train", "inference"])
def test_unet_runs_under_bf16_autocast(grad):
    """The dtype logic of CUDA training (bf16 autocast; in-place ResBlock sums without
    autograd), exercised with CPU autocast: close to fp32, gradients finite."""
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_channels=8))
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([3, 700])
    with torch.no_grad():
        expected = model(x, t)
    with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(x, t)
    assert torch.allclose(got.float(), expected, atol=0.05)
    if grad:
        got.float().pow(2).mean().backward()
        trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        assert trainable
        for name, p in trainable:  # every parameter gets a finite gradient
            assert p.grad is not None, f"{name} got no gradient"
            assert p.grad.isfinite().all(), f"{name} has a non-finite gradient"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_in_bf16(tracking_uri, tmp_path, mnist_dir):
    """A few bf16-autocast steps on the GPU; the clock counts the GPU's work."""
    args = ["train", "pixel", "--device", "cuda", "--steps", "4", "--batch-size", "16",
            "--out", str(tmp_path), "--data-dir", str(mnist_dir), "--set", "train_images=64",
            "--set", "model.base_channels=16", "--set", "experiment=test-cuda"]
    assert main(args) == 0
    metadata = load_metadata(tmp_path / "pixel.safetensors")
    assert metadata["device"] == "cuda" and metadata["step"] == 4
    assert metadata["train_seconds"] > 0 and metadata["final_loss"] == metadata["final_loss"]


def test_every_model_kind_has_a_training_task():
    from diffbench.io.config import KINDS
    from diffbench.train import TASKS

    assert set(TASKS) == set(KINDS)


def test_a_latent_noise_aware_classifier_trains_on_the_vaes_latents(trained, mnist_dir):
    """``space: latent``: the classifier sees z_t of the VAE's scaled latents [B, 4, 14, 14]."""
    config = load_train_config("classifier", REPO / "configs/train_latent_noisy_classifier.yaml", [
        f"out={trained}", f"vae_checkpoint={trained / 'vae.safetensors'}", f"data_dir={mnist_dir}",
        "train_images=64", "batch_size=8", "model.channels=[8, 16]", "model.num_groups=4",
        "experiment=test-train-latent-classifier",
    ], steps=2)
    from diffbench.train import train

    path = train(config, command="test")
    model, metadata = load_model(path)
    assert metadata["latent_shape"] == [4, 14, 14] and metadata["config"]["space"] == "latent"
    assert model.cfg.in_channels == 4 and model.cfg.noise_aware
    z, t = torch.zeros(2, 4, 14, 14), torch.tensor([0, 999])
    assert model(z, t).shape == (2, 10)
    assert "test_accuracy_first_1000" in (trained / "latent_noisy_classifier.md").read_text()


@pytest.mark.parametrize("prediction,model", [
    ("consistency", "{base_channels: 8}"), ("meanflow", "{base_channels: 8, interval_time: true}")])
def test_a_one_step_network_is_tuned_from_a_flow_checkpoint(prediction, model, tiny_checkpoints,
                                                             tracking_uri, tmp_path, mnist_dir):
    """Two steps of ECT or MeanFlow from the tiny flow network: its weights are the start, its
    CPU seconds count in the card, the checkpoint names its prediction and samples with its
    own sampler."""
    start = tiny_checkpoints / "pixel_flow.safetensors"
    code = main(["train", "pixel", "--config", f"configs/train_pixel_{prediction}.yaml",
                 "--out", str(tmp_path), "--data-dir", str(mnist_dir), "--steps", "2",
                 "--batch-size", "4", "--set", "train_images=16", "--set", f"model={model}",
                 "--set", f"init_from={start}", "--set", "cpu_budget_s=null"])
    assert code == 0
    path = tmp_path / f"pixel_{prediction}.safetensors"
    metadata = load_metadata(path)
    assert metadata["prediction"] == prediction and metadata["step"] == 2
    assert metadata["init_from"]["name"] == "pixel_flow"
    assert metadata["init_from"]["cpu_seconds"] == 1.25  # the tiny flow network's record
    card = (tmp_path / f"pixel_{prediction}.md").read_text()
    assert "| started from | pixel_flow (1.2 CPU s; total" in card
    model_, _ = load_model(path)
    flow, _ = load_model(start)
    moved = [name for name, tensor in flow.state_dict().items()
             if not torch.equal(tensor, model_.state_dict()[name])]
    assert moved  # tuned: the start's weights, changed by two steps


def test_tuning_refuses_a_start_that_is_not_a_flow_network(tiny_checkpoints, tmp_path, mnist_dir,
                                                            capsys):
    code = main(["train", "pixel", "--config", "configs/train_pixel_consistency.yaml",
                 "--out", str(tmp_path), "--data-dir", str(mnist_dir), "--steps", "1",
                 "--set", "model={base_channels: 8}", "--set", "train_images=16",
                 "--set", f"init_from={tiny_checkpoints / 'pixel.safetensors'}"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "predicts 'eps'" in err
