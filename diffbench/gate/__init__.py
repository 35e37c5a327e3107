"""The regression gates: diffbench ab (base against head, work counts, interleaved timing,
fidelity), its cases and workers, the fidelity baseline gate, the bench report and history."""
