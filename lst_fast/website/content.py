"""What the site's model forwards are computed from, by content: the weights and the pixels. Checked against
the folder's OUT/provenance.json before any forward (one line naming what changed), and the key of the
site's cache (OUT/cache/), so a rebuild after the weights or the data changed never reuses old forwards."""

from __future__ import annotations

import json

import torch

from lst_fast.data.image_set import ImageSet
from lst_fast.data.preprocessing import Preprocessing
from lst_fast.evaluation.finished import FinishedRun
from lst_fast.evaluation.pool import pixels_digest
from lst_fast.evaluation.provenance import Provenance, refuse_changes, weights_digest
from lst_fast.models.descriptor import ModelDescriptor
from lst_fast.run_environment import RunEnvironment

__all__ = ["checked_content"]

ADVICE = "the site reruns the model for its walk pages and confidences: restore them, or evaluate again"


def checked_content(run: FinishedRun, described: ModelDescriptor, data: ImageSet, env: RunEnvironment) -> str:
    """The digests of the weights and pixels the site's forwards use (a cache key), after checking them
    against the run's recorded provenance (InputError, one line, when they differ). A folder of an earlier
    lst_fast records none: the pixels are then those of its walks' sources and targets, as read now."""
    from lst_fast.data.sources import open_image_set

    weights = weights_digest(described.classifier(), run.cfg.checkpoint)
    recorded = run.provenance
    if recorded is None:
        walked = torch.unique(torch.cat([r[k] for r in run.rounds for k in ("source", "target")]))
        return json.dumps([weights["sha256"], pixels_digest(data, walked)])
    view = data
    if not data.in_memory and described.preprocessing.to_dict() != recorded.preprocessing:
        pre = recorded.preprocessing
        view = open_image_set(
            run.cfg.data, env.data_root, Preprocessing(**{**pre, "input_size": tuple(pre["input_size"])})
        )
    indices = torch.tensor(recorded.pixel_indices, dtype=torch.long)
    if len(indices) and int(indices.max()) >= len(view):
        pixels = f"{len(view)} images, fewer than the recorded indices need"
    else:
        pixels = pixels_digest(view, indices)
    ours = Provenance(
        model=run.cfg.model,
        weights_sha256=weights["sha256"],
        weights_of=weights["of"],
        pixels_sha256=pixels,
        pixel_indices=recorded.pixel_indices,
        preprocessing=recorded.preprocessing,
    )
    refuse_changes(recorded, ours, str(run.folder), ADVICE)
    return json.dumps([weights["sha256"], pixels])
