"""diffbench's pytest plugin (the ``pytest11`` entry point ``diffbench``): benchmark your own
sampler or model on diffbench's checkpoints, digits and fidelity gate (docs/pytest_plugin.md).
``plugin.py`` holds the options, markers and fixtures, ``benchmark_json.py`` pytest-benchmark's
hook, ``env.py`` the session's state."""
