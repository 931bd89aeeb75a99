"""The reliability suite (marker `reliability`, declared in pyproject.toml): bounded load,
fuzzing and faults on real servers. Run alone with `pytest -m reliability`."""
