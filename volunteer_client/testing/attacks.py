"""Model-poisoning attacks, for testing and demos only: pure tensor functions.

A malicious volunteer (``python -m volunteer_client.testing run --attack NAME[:PARAM]``,
see :mod:`.faults`) trains honestly and then transforms what it uploads, or
trains on corrupted labels. With ``w0`` the unit's input weights, ``w`` the honestly trained
ones and ``d = w - w0`` the update (floating-point tensors only; integer buffers pass
through unchanged):

==============  ==========================  ===============================================
attack          upload                      parameter (default)
==============  ==========================  ===============================================
``signflip``    ``w0 - k d``                ``k`` boost (5): a boosted reversed update
``noise``       ``w0 + d + N(0, s^2)``      ``s`` noise std (1.0), independent per coordinate
``scale``       ``w0 + k d``                ``k`` (10): model replacement (Bagdasaryan 2020)
``labelflip``   honest training on          none; labels ``y -> C-1-y`` (C = 10 classes)
                flipped labels
``alie``        ``w0 + d - z s sign(d)``    ``z`` (1.0): "a little is enough"
==============  ==========================  ===============================================

**A little is enough** (Baruch et al. 2019) moves every coordinate of the update by ``z``
standard deviations of the *honest updates* in the direction that hurts (``mu - z sigma``),
little enough to hide inside their spread. An attacker here sees no other volunteer's
update, so it approximates: ``mu`` by its own update ``d``, and ``sigma`` per tensor by the
standard deviation of its own update's coordinates in that tensor, pushing each coordinate
against its own sign. Colluding attackers with the same inputs send the same vector, as in
the paper. The paper's ``z`` for 10 clients and 2 attackers is about 0.25; the default 1.0
is stronger because this ``sigma`` is a coarser (per-tensor) estimate.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

__all__ = ["ATTACKS", "DEFAULT_PARAMS", "apply_update_attack", "flip_labels", "garbage_like"]

Weights = dict[str, torch.Tensor]

#: attack name -> default parameter
DEFAULT_PARAMS: dict[str, float] = {
    "signflip": 5.0,
    "noise": 1.0,
    "scale": 10.0,
    "labelflip": 0.0,
    "alie": 1.0,
}
ATTACKS = tuple(DEFAULT_PARAMS)
#: attacks that change the uploaded weights (``labelflip`` changes the training data)
UPDATE_ATTACKS = ("signflip", "noise", "scale", "alie")


def _delta(before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor]) -> Weights:
    if before.keys() != after.keys():
        raise ValueError("before and after must have the same tensor names")
    return {k: after[k] - before[k] for k in after if after[k].is_floating_point()}


def apply_update_attack(
    name: str,
    before: Mapping[str, torch.Tensor],
    after: Mapping[str, torch.Tensor],
    *,
    param: float | None = None,
    generator: torch.Generator | None = None,
) -> Weights:
    """The weights a ``name`` attacker uploads instead of ``after`` (see the module table).
    Same names, shapes and dtypes as ``after``; integer tensors unchanged."""
    if name not in UPDATE_ATTACKS:
        raise ValueError(f"not an update attack: {name!r} (one of {', '.join(UPDATE_ATTACKS)})")
    k = DEFAULT_PARAMS[name] if param is None else float(param)
    delta = _delta(before, after)
    out: Weights = {}
    for key, w in after.items():
        if key not in delta:
            out[key] = w.clone()
            continue
        w0, d = before[key], delta[key]
        if name == "signflip":
            new = w0 - k * d
        elif name == "scale":
            new = w0 + k * d
        elif name == "noise":
            noise = torch.randn(d.shape, generator=generator, dtype=torch.float32)
            new = w0 + d + k * noise.to(d.dtype)
        else:  # alie
            sigma = d.to(torch.float64).std(unbiased=False) if d.numel() > 1 else d.abs().sum()
            new = w0 + d - (k * sigma).to(d.dtype) * torch.sign(d)
        out[key] = new.to(w.dtype).contiguous()
    return out


def flip_labels(labels: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """Label flipping: class ``y`` becomes ``num_classes - 1 - y``."""
    return (num_classes - 1 - labels).to(labels.dtype)


def garbage_like(
    reference: Mapping[str, torch.Tensor], generator: torch.Generator | None = None
) -> Weights:
    """Broken hardware or a lazy cheat: finite random values shaped like ``reference``
    (standard normal for float tensors, integer tensors copied)."""
    return {
        k: (
            torch.randn(t.shape, generator=generator, dtype=torch.float32).to(t.dtype)
            if t.is_floating_point()
            else t.clone()
        )
        for k, t in reference.items()
    }
