"""The row model's upgrades of rows written by earlier versions (diffbench.results.row.upgrade)."""

from __future__ import annotations

from diffbench.results.row import SCHEMA_VERSION, make_row, upgrade


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


def test_columns_and_mlflow_metrics_derive_from_the_row_fields():
    from diffbench.results.report import COLUMNS, cell
    from diffbench.results.row import ResultRow, metrics_of, tags_of

    declared = [name for name, field in ResultRow.model_fields.items()
                if field.json_schema_extra["column"]]
    assert [key for key, _, _ in COLUMNS] == declared  # one declaration, in field order
    row = make_row(name="DDIM-50", mse=0.04, mse_ci95=[0.03, 0.05], preservation=0.9,
                   peak_memory_bytes=3 * 2**20, mse_vs_reference=0.01,
                   mse_vs_reference_ci95=[-0.02, 0.04], vs_reference="DDIM-50",
                   vs_reference_resolved={"mse": False, "preservation": True})
    assert metrics_of(row) == {
        "mse": 0.04, "mse_ci95_lo": 0.03, "mse_ci95_hi": 0.05, "preservation": 0.9,
        "peak_memory_bytes": 3 * 2**20, "mse_vs_reference": 0.01,
        "mse_vs_reference_ci95_lo": -0.02, "mse_vs_reference_ci95_hi": 0.04}
    assert tags_of({**row, "preservation_vs_reference": -0.1}) == {  # verdicts: tags
        "vs_reference": "DDIM-50", "mse_vs_reference_resolved": "false",
        "mse_vs_reference_verdict": "not resolved",
        "preservation_vs_reference_resolved": "true",
        "preservation_vs_reference_verdict": "lower"}
    formats = {key: fmt for key, _, fmt in COLUMNS}
    assert cell(row, "peak_memory_bytes", formats["peak_memory_bytes"]) == "3.0"  # in MiB
    assert cell(row, "mse", formats["mse"]) == "0.0400 [0.0300, 0.0500]"
