"""The official YOLOR code (``paper`` branch) as a baseline: its model, ``compute_loss`` and eval forward.

The official repository is GPL code that this project never ships: the user passes a checkout
(``git clone https://github.com/WongKinYiu/yolor && git -C yolor checkout paper``) and the benchmark
imports it from a temporary copy, so the checkout itself is never modified. The copy gets the smallest
compatibility edits that let the 2021 code run on current torch (listed in :data:`COMPAT_EDITS`; each is a
pure type fix that changes no value), and ``cv2``, which the official modules import at load time but the
model and loss never call, is stood in for when OpenCV is not installed.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import shutil
import sys
import tempfile
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

#: (file, original text, replacement, why). Applied to the temporary copy only.
COMPAT_EDITS: tuple[tuple[str, str, str, str], ...] = (
    (
        "utils/loss.py",
        "gj.clamp_(0, gain[3] - 1), gi.clamp_(0, gain[2] - 1)",
        "gj.clamp_(0, int(gain[3]) - 1), gi.clamp_(0, int(gain[2]) - 1)",
        "torch >= 2 refuses to clamp a long tensor in place with float-tensor bounds",
    ),
)

#: The loss and optimiser settings both sides use (the official hyp.scratch.640 values).
HYP = {
    "lr0": 1e-5,
    "momentum": 0.937,
    "weight_decay": 0.0005,
    "box": 0.05,
    "cls": 0.3,
    "cls_pw": 1.0,
    "obj": 0.7,
    "obj_pw": 1.0,
    "anchor_t": 4.0,
    "fl_gamma": 0.0,
}


class OfficialRepoError(RuntimeError):
    """The given path is not a usable checkout of the official YOLOR ``paper`` branch."""


@dataclass
class OfficialCode:
    """The imported official modules.

    Attributes:
        root: The temporary copy they were imported from.
        model_class: ``models.yolo.Model``.
        compute_loss: ``utils.loss.compute_loss``.
        model_dir: Where the official model YAMLs are.
    """

    root: Path
    model_class: type[nn.Module]
    compute_loss: Callable[..., Any]
    model_dir: Path


_LOADED: dict[Path, OfficialCode] = {}


def load_official(repo: str | Path) -> OfficialCode:
    """Import the official model and loss from a checkout of the ``paper`` branch (once per process).

    Raises:
        OfficialRepoError: naming what is missing or which compatibility edit no longer applies.
    """
    repo = Path(repo).resolve()
    if repo in _LOADED:
        return _LOADED[repo]
    for needed in ("models/yolo.py", "models/common.py", "utils/loss.py", "models/yolor-p6.yaml"):
        if not (repo / needed).is_file():
            raise OfficialRepoError(
                f"--official-repo {repo}: no {needed}; give a checkout of WongKinYiu/yolor on the `paper` branch"
            )
    for name in ("models", "utils"):
        loaded = sys.modules.get(name)
        if loaded is not None and not str(getattr(loaded, "__file__", "")).startswith(tempfile.gettempdir()):
            raise OfficialRepoError(
                f"a module named {name!r} ({getattr(loaded, '__file__', '?')}) is already imported; the official "
                "code needs that name: run the benchmark in a fresh process"
            )
    root = Path(tempfile.mkdtemp(prefix="yolor-official-"))
    for name in ("models", "utils"):
        shutil.copytree(repo / name, root / name)
    for rel, old, new, why in COMPAT_EDITS:
        path = root / rel
        text = path.read_text()
        if old in text:
            path.write_text(text.replace(old, new))
        elif new not in text:
            raise OfficialRepoError(
                f"{repo / rel}: cannot apply the compatibility edit ({why}): text not found"
            )
    stand_in = None
    if "cv2" not in sys.modules and importlib.util.find_spec("cv2") is None:
        stand_in = types.ModuleType("cv2")
        stand_in.setNumThreads = lambda n: None  # called at import by utils/general.py
        sys.modules["cv2"] = stand_in
    sys.path.insert(0, str(root))
    try:
        yolo = importlib.import_module("models.yolo")
        loss = importlib.import_module("utils.loss")
    finally:
        sys.path.remove(str(root))
        if stand_in is not None and sys.modules.get("cv2") is stand_in:
            # Only the official modules keep it; other libraries must still see that OpenCV is absent.
            del sys.modules["cv2"]
    code = OfficialCode(root, yolo.Model, loss.compute_loss, repo / "models")
    _LOADED[repo] = code
    return code


def build_official_model(
    code: OfficialCode, name: str = "yolor-p6", nc: int = 80, seed: int = 0
) -> nn.Module:
    """An official model from its YAML (``models/{name}.yaml``), with the attributes ``compute_loss`` reads."""
    torch.manual_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):
        model = code.model_class(str(code.model_dir / f"{name}.yaml"), ch=3, nc=nc)
    hyp = dict(HYP)
    hyp["cls"] *= nc / 80.0  # as the official train.py does
    model.hyp = hyp
    model.gr = 1.0
    model.nc = nc
    return model


def official_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """The official ``train.py`` optimiser: SGD with Nesterov momentum over three parameter groups."""
    no_decay, decay, biases = [], [], []
    for module in model.modules():
        if isinstance(getattr(module, "bias", None), nn.Parameter):
            biases.append(module.bias)
        if isinstance(module, nn.BatchNorm2d):
            no_decay.append(module.weight)
        elif isinstance(getattr(module, "weight", None), nn.Parameter):
            decay.append(module.weight)
        implicit = getattr(module, "implicit", None)
        if isinstance(implicit, nn.Parameter):
            no_decay.append(implicit)
    optimizer = torch.optim.SGD(no_decay, lr=HYP["lr0"], momentum=HYP["momentum"], nesterov=True)
    optimizer.add_param_group({"params": decay, "weight_decay": HYP["weight_decay"]})
    optimizer.add_param_group({"params": biases})
    return optimizer


@dataclass
class OfficialTrainStep:
    """The official training step: forward, ``compute_loss``, backward, optimiser step (fp32, as on CPU)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    compute_loss: Callable[..., Any]
    images: torch.Tensor
    targets: torch.Tensor

    def step(self) -> None:
        pred = self.model(self.images)
        loss, _ = self.compute_loss(pred, self.targets, self.model)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()

    def training_flops(self) -> int:
        with FlopCounterMode(display=False) as counter:
            pred = self.model(self.images)
            loss, _ = self.compute_loss(pred, self.targets, self.model)
            loss.backward()
        self.optimizer.zero_grad()
        return int(counter.get_total_flops())


def official_train_step(
    code: OfficialCode, batch: dict[str, Any], device: torch.device, name: str = "yolor-p6", nc: int = 80
) -> OfficialTrainStep:
    """The official step on the same images and boxes as ``batch`` (identities dropped)."""
    model = build_official_model(code, name, nc).to(device).train()
    return OfficialTrainStep(
        model,
        official_optimizer(model),
        code.compute_loss,
        batch["images"].to(device),
        batch["boxes"].to(device),
    )


def official_inference(
    code: OfficialCode,
    device: torch.device,
    *,
    batch: int,
    size: int,
    fused: bool = True,
    name: str = "yolor-p6",
    nc: int = 80,
    seed: int = 0,
) -> Callable[[], Any]:
    """The official eval forward (``test.py``/``detect.py`` fuse Conv+BN first, as ``fused`` does)."""
    model = build_official_model(code, name, nc).to(device).eval()
    if fused:
        with contextlib.redirect_stdout(io.StringIO()):
            model.fuse()
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)).to(device)

    def forward() -> Any:
        with torch.no_grad():
            return model(images)[0]

    return forward


__all__ = [
    "COMPAT_EDITS",
    "HYP",
    "OfficialCode",
    "OfficialRepoError",
    "OfficialTrainStep",
    "build_official_model",
    "load_official",
    "official_inference",
    "official_optimizer",
    "official_train_step",
]
