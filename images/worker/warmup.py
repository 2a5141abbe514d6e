"""Build step of the worker image: one tiny training step through the code paths a unit uses
(safetensors, pydantic, LeNet-style layers, Adam and SGD, deterministic mode), so that Python
writes the bytecode of exactly the library modules a unit imports. The root filesystem is
read-only at run time, and the bytecode of the thousands of modules a unit never imports is
left out of the image. This script does not import the trainer, so the layer it builds is
reused when only the trainer changes."""

import contextlib
import tempfile
from pathlib import Path

import numpy  # noqa: F401
import safetensors
import safetensors.torch
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn
from torch.nn import functional as F


class Task(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = Field(default=0.001, gt=0)

    @model_validator(mode="after")
    def check(self) -> "Task":
        return self


with contextlib.suppress(ValidationError):
    Task.model_validate_json('{"lr": -1}')

model = nn.Sequential(
    nn.Conv2d(1, 4, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
    nn.Linear(576, 10), nn.LogSoftmax(dim=1),
)  # fmt: skip
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "w.safetensors"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(state, str(path), metadata={"report": "{}"})
    model.load_state_dict(safetensors.torch.load_file(str(path)))
torch.manual_seed(0)
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)
for optimizer in (
    torch.optim.Adam(model.parameters(), lr=1e-3),
    torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9),
):
    x = torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(1))
    order = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = F.nll_loss(model((x[order].float() / 255.0).unsqueeze(1)), y[order])
    torch.autograd.backward(loss)
    optimizer.step()
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
print("warm-up step done")
