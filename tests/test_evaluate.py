"""`diffbench evaluate` on tiny random-init checkpoints: every number present, goals checked,
cards updated."""

from __future__ import annotations

import json

import pytest
import torch

from diffbench.cli import main
from diffbench.io.checkpoints import load_model
from diffbench.io.data import load_mnist
from diffbench.sampling import SAMPLERS


def test_evaluate_writes_every_number_and_updates_the_cards(tiny_checkpoints, mnist_dir,
                                                            tmp_path, capsys):
    out = tmp_path / "evaluation.json"
    (tiny_checkpoints / "pixel.md").write_text("# pixel\n\nhow it was trained\n")
    code = main(["evaluate", "--checkpoints", str(tiny_checkpoints), "--out", str(out),
                 "--data-dir", str(mnist_dir), "--device", "cpu", "--num-images", "4",
                 "--ddpm-images", "2", "--sweep-images", "2", "--sweep-ddpm-images", "2",
                 "--generation-samples", "8", "--sweep", "0.5", "--update-cards"])
    assert code == 0
    report = json.loads(out.read_text())
    classifier = load_model(tiny_checkpoints / "classifier.safetensors")[0].eval()
    test = load_mnist("test", mnist_dir)
    with torch.inference_mode():
        predicted = torch.cat([classifier(x).argmax(1) for x in test.images.split(1000)])
    accuracy = float((predicted == test.labels).float().mean())
    assert report["classifier"]["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert report["classifier"]["num_images"] == 10_000
    assert report["vae"]["num_images"] == 10_000 and report["vae"]["reconstruction_mse"] > 0
    rows = {(r["name"], r["strength"]): r for r in report["img2img"]}
    names = {f"{prefix}{cls.label}-{cls.default_steps or 1000}"  # every registered sampler
             for prefix in ("", "LDM-") for cls in SAMPLERS.values()}
    assert {"RF-Euler-50", "LDM-RF-DPM++2M-50"} < names  # the flow samplers on the flow networks
    assert {r["prediction"] for r in report["img2img"] if "RF-" in r["name"]} == {"flow"}
    assert {"DDPM-1000", "DDIM-50", "LDM-DDPM-1000", "LDM-DDIM-50", "Heun-50"} < names
    assert set(rows) == {(name, s) for name in names for s in (0.3, 0.5)}
    assert rows[("Heun-50", 0.3)]["nfe"] == 29 and rows[("UniPC-50", 0.3)]["nfe"] == 15
    assert rows[("DDIM-50", 0.3)]["num_images"] == 4 and rows[("DDPM-1000", 0.3)]["num_images"] == 2
    assert rows[("DDIM-50", 0.3)]["start_timestep"] == 299  # the exact start, as DDPM-1000's
    assert rows[("DDPM-1000", 0.3)]["start_timestep"] == 299
    assert [g["name"] for g in report["generation"]] == [
        "DDIM-50", "RF-Euler-50", "CM-1", "MF-1", "LDM-DDIM-50", "LDM-RF-Euler-50", "LDM-CM-1",
        "LDM-MF-1"]
    assert {"CM-1", "MF-1", "LDM-MF-1"} < names  # the one-step networks, one jump
    assert {r["prediction"] for r in report["img2img"] if "MF-" in r["name"]} == {"meanflow"}
    assert len(report["goals"]) == 2 + 6 + 2 + 3 * 8 and all("met" in g for g in report["goals"])
    main_rows = {r["name"]: r for r in report["img2img"] if r["strength"] == 0.3}
    ratio = next(g for g in report["goals"] if g["goal"].startswith("LDM-DDIM-50 mse / DDIM"))
    assert ratio["value"] == pytest.approx(main_rows["LDM-DDIM-50"]["mse"]
                                           / main_rows["DDIM-50"]["mse"])
    assert ratio["target"] == "<= 1.5"
    printed = capsys.readouterr().out
    assert "DDIM-50 preservation at strength 0.3" in printed
    card = (tiny_checkpoints / "pixel.md").read_text()
    assert card.startswith("# pixel\n\nhow it was trained\n\n## Measured fidelity")
    assert "| DDIM-50 | 0.3 | 299 | 4 |" in card


def test_evaluate_samplers_limits_the_systems_and_their_goals(tiny_checkpoints, mnist_dir,
                                                              tmp_path, capsys):
    out = tmp_path / "evaluation.json"
    args = ["evaluate", "--checkpoints", str(tiny_checkpoints), "--out", str(out),
            "--data-dir", str(mnist_dir), "--device", "cpu", "--num-images", "2",
            "--sweep-images", "2", "--generation-samples", "4", "--sweep", "0.5"]
    assert main([*args, "--samplers", "ddim"]) == 0
    report = json.loads(out.read_text())
    assert {r["name"] for r in report["img2img"]} == {"DDIM-50", "LDM-DDIM-50"}
    img2img_goals = [g["goal"] for g in report["goals"] if "strength" in g["goal"]]
    assert img2img_goals == ["DDIM-50 preservation at strength 0.3",
                             "DDIM-50 mse at strength 0.3",
                             "LDM-DDIM-50 preservation at strength 0.3",
                             "LDM-DDIM-50 preservation gap to DDIM-50 at strength 0.3",
                             "LDM-DDIM-50 mse / DDIM-50 mse at strength 0.3"]
    capsys.readouterr()
    assert main([*args, "--samplers", "ddim", "rk4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "'rk4'" in err and "dpmsolver++" in err


def test_each_goal_is_met_or_not_as_its_numbers_say():
    """check_goals on a report whose numbers are chosen by hand, on both sides of each target."""
    from diffbench.evaluate import check_goals

    def row(name, mse, preservation):
        return {"name": name, "strength": 0.3, "mse": mse, "preservation": preservation}

    report = {
        "classifier": {"test_accuracy": 0.995},  # >= 0.99: met
        "vae": {"preservation": 0.97},  # >= 0.98: not met
        "img2img": [row("DDIM-50", 0.05, 0.98),  # mse <= 0.04: not met; preservation met
                    row("LDM-DDIM-50", 0.07, 0.96)],  # gap 0.02 <= 0.03: met; 1.4x <= 1.5: met
        "generation": [{"name": "DDIM-50", "confident_share": 0.9, "min_class_share": 0.04,
                        "max_class_share": 0.15}],  # met, not met (>= 0.05), met (<= 0.15)
    }
    met = {g["goal"]: g["met"] for g in check_goals(report)}
    assert met == {
        "classifier test accuracy": True,
        "VAE reconstruction preservation": False,
        "DDIM-50 preservation at strength 0.3": True,
        "DDIM-50 mse at strength 0.3": False,
        "LDM-DDIM-50 preservation at strength 0.3": True,
        "LDM-DDIM-50 preservation gap to DDIM-50 at strength 0.3": True,
        "LDM-DDIM-50 mse / DDIM-50 mse at strength 0.3": True,
        "DDIM-50 generation: confident share": True,
        "DDIM-50 generation: rarest digit share": False,
        "DDIM-50 generation: commonest digit share": True,
    }
