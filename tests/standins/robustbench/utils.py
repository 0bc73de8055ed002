"""Stand-in for robustbench.utils.load_model (see robustbench/__init__.py): same signature, same file
layout; a missing checkpoint fails the way an offline download does."""

from pathlib import Path

import torch

from robustbench.model_zoo import model_dicts


def load_model(
    model_name, model_dir="./models", dataset="cifar10", threat_model="Linf", custom_checkpoint="", norm=None
):
    models = model_dicts[str(dataset)][str(threat_model)]
    model = models[model_name]["model"]()  # KeyError for an unknown name, as RobustBench
    path = Path(model_dir) / str(dataset) / str(threat_model) / f"{model_name}.pt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        raise ConnectionError(
            "HTTPSConnectionPool(host='drive.google.com', port=443): Max retries exceeded\n"
            "(Caused by NameResolutionError: Failed to resolve 'drive.google.com')"
        )
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()
