"""The row model's upgrades of rows written by earlier versions (diffbench.results.row.upgrade)."""

from __future__ import annotations

from diffbench.results.row import SCHEMA_VERSION, upgrade


def test_a_version_1_row_gains_nfe_and_loses_its_old_distances():
    old = {"name": "DDIM-50", "steps": 15, "mse": 0.05, "frechet_distance": 1.4,
           "frechet_distance_ci95": [1.5, 3.9], "kid": 0.01, "kid_ci95": [-0.01, 0.03]}
    row = upgrade(old)
    assert row["schema_version"] == SCHEMA_VERSION == 4
    assert row["nfe"] == 15 and "steps" not in row and row["mse"] == 0.05
    assert not {"frechet_distance", "frechet_distance_ci95", "kid", "kid_ci95"} & set(row)


def test_a_version_2_row_keeps_its_steps_and_loses_its_old_distances():
    row = upgrade({"schema_version": 2, "name": "DDIM-50", "steps": 50, "nfe": 15,
                   "frechet_distance": 1.4, "kid": 0.01})
    assert (row["steps"], row["nfe"], row["schema_version"]) == (50, 15, 4)
    assert "frechet_distance" not in row and "kid" not in row


def test_a_current_row_is_left_as_it_is():
    row = {"schema_version": SCHEMA_VERSION, "name": "DDIM-50", "frechet_distance": 0.2}
    assert upgrade(row) is row


def test_a_version_3_row_keeps_its_distances_and_has_no_system_config():
    row = upgrade({"schema_version": 3, "name": "DDIM-50", "steps": 50, "nfe": 15,
                   "frechet_distance": 1.4, "kid": 0.01})
    assert (row["frechet_distance"], row["kid"], row["schema_version"]) == (1.4, 0.01, 4)
    assert "system_config" not in row
