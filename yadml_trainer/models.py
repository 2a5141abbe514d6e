"""Model registry: the networks a job can train, shared by the server and the trainer.

Both sides must build exactly the same architecture, so the registry lives here. Weights
travel as safetensors state dicts keyed by ``state_dict()`` names.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F


class LeNet(nn.Module):
    """LeNet-5 as in the project's reference workload.

    conv 1->6 5x5 'same', max-pool 2, conv 6->16 5x5, max-pool 2, conv 16->120 5x5,
    fc 120->84, fc 84->10, log-softmax. ReLU activations. 61,706 parameters.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.conv3 = nn.Conv2d(16, 120, kernel_size=5)
        self.fc1 = nn.Linear(120, 84)
        self.fc2 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.conv3(x))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return F.log_softmax(self.fc2(x), dim=1)


MODELS: dict[str, Callable[[], nn.Module]] = {"lenet": LeNet}

#: Pixel normalisation applied by both the trainer and the server's evaluation.
PIXEL_MEAN = 0.1307
PIXEL_STD = 0.3081


def build_model(name: str) -> nn.Module:
    """A freshly initialised model (seed torch first for reproducible weights)."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}") from None
    return factory()


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 28, 28] (or [N, 1, 28, 28]) -> float32 [N, 1, 28, 28], normalised."""
    x = images.to(torch.float32).div_(255.0)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return x.sub_(PIXEL_MEAN).div_(PIXEL_STD)


def initial_state(name: str, seed: int) -> dict[str, torch.Tensor]:
    """Deterministic initial weights for a job: the model built under ``torch.manual_seed``."""
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = build_model(name)
    finally:
        torch.random.set_rng_state(gen_state)
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
