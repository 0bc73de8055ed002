"""A STAND-IN for the robustbench package, for lst_fast's tests only.

RobustBench installs from its repository and downloads checkpoints from the network, neither of which the
tests may do. This package copies the part lst_fast calls: `robustbench.utils.load_model` with the same
signature, reading MODEL_DIR/DATASET/THREAT/NAME.pt, and `robustbench.model_zoo.model_dicts` with each
model's preprocessing name. Its models are tiny colour classifiers, not the real networks.
"""
