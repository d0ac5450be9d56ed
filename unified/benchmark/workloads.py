"""What the benchmark times: a training step of the real trainer, an inference forward, their inputs.

The training step is :meth:`unified.engine.Trainer.run_step` itself (forward, every task's loss through
``TrainingModule``, the balancer, backward, gradient clipping, the optimiser step), so the benchmark
measures the code users run, with the precision and memory format the experiment config resolves to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from unified.data.dataset import batch_to_device, collate
from unified.data.kinds import INSTANCE_KIND, LABEL_KINDS, kind_order, label_kind
from unified.data.kinds.boxes import Boxes
from unified.engine.balancers import build_balancer
from unified.engine.experiment import ExperimentConfig, load_experiment
from unified.engine.trainer import Trainer, autocast_context, resolve_precision
from unified.model import UnifiedModel, build_model
from unified.packaged_configs import configs_root
from unified.task import TASKS, DatasetInfo, resolve_tasks

REPO = Path(__file__).resolve().parents[2]
#: The packaged model YAMLs (the repository's configs/models in a checkout, installed ones otherwise).
MODELS = configs_root() / "models"
#: The demo experiment: its model, tasks, image size and batch are the demo workload.
DEMO_EXPERIMENT = configs_root() / "experiments" / "synthetic.yaml"
PAPER_MODEL = MODELS / "yolor-p6-paper.yaml"


def repo_path(path: str | Path) -> Path:
    """``path`` as given when it exists, else relative to the repository when there, else as given (a packaged
    model's name, which the model loader resolves)."""
    p = Path(path)
    return p if p.exists() or p.is_absolute() or not (REPO / p).exists() else REPO / p


#: Dataset options of the paper workload's kinds: COCO's 17 person keypoints (the heaviest common pose
#: head), for the ``pose`` task of the all-tasks row.
COCO_KIND_OPTIONS: dict[str, dict[str, Any]] = {
    "keypoints": {
        "kpt_shape": [17, 3],
        "flip_idx": [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15],
    }
}


def all_tasks() -> list[str]:
    """Every installed task (the built-in ones and those of installed plugins, not tasks a script
    registered on the fly): the multi-task row."""
    return TASKS.installed_names()


def task_kinds(tasks: Sequence[str]) -> tuple[str, ...]:
    """The kinds of label ``tasks`` (and the tasks they build on) read, with the kinds those require,
    in :func:`kind_order`."""
    kinds: set[str] = set()
    for name in resolve_tasks(list(tasks)):
        kinds.update(TASKS.get(name).label_kinds)
    for name in list(kinds):
        kinds.update(LABEL_KINDS.get(name).requires)
    return tuple(kind_order(kinds))


def coco_like_info(
    nc: int = 80, num_identities: int = 500, tasks: Sequence[str] | None = None
) -> DatasetInfo:
    """Dataset info for random batches: ``nc`` classes (also the image labels), identities for ``jde``,
    and the kinds of label of ``tasks`` (default: every registered task's)."""
    names = [f"class{i}" for i in range(nc)]
    kinds = task_kinds(tasks or all_tasks())
    options = {k: v for k, v in COCO_KIND_OPTIONS.items() if k in kinds}
    return DatasetInfo(names, list(names), num_identities, kinds, kind_options=options)


def demo_info(num_identities: int = 32) -> DatasetInfo:
    """The synthetic world's classes and scene labels (the demo's heads), with ``num_identities`` identities
    and the kinds of label of the demo's tasks."""
    from unified.data.synthetic import CLASS_NAMES, SCENE_LABELS

    kinds = task_kinds(load_experiment(DEMO_EXPERIMENT).tasks)
    return DatasetInfo(list(CLASS_NAMES), [*CLASS_NAMES, *SCENE_LABELS], num_identities, kinds)


def random_batch(
    batch: int,
    size: int,
    info: DatasetInfo,
    boxes_per_image: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """A batch in the contract of ``docs/ARCHITECTURE.md``, made as the data pipeline makes one: noise
    images, ``boxes_per_image`` random boxes each, and every other kind of ``info.label_kinds`` from its
    kind's ``example`` (masks, keypoints, identities, image labels ...), through each kind's ``to_sample``
    and ``collate``.

    Every image carries every kind, so every enabled task computes its full loss: the worst case for
    multi-task cost.
    """
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    centre = torch.rand(batch, boxes_per_image, 2, generator=g) * 0.6 + 0.2
    wh = torch.rand(batch, boxes_per_image, 2, generator=g) * 0.3 + 0.05
    classes = torch.randint(0, info.nc, (batch, boxes_per_image), generator=g)
    images = torch.rand(batch, 3, size, size, generator=g)
    samples = []
    for i in range(batch):
        xyxy = torch.cat((centre[i] - wh[i] / 2, centre[i] + wh[i] / 2), 1) * size
        labels: dict[str, Any] = {INSTANCE_KIND: Boxes(xyxy.numpy().astype(np.float32), classes[i].numpy())}
        for name in kind_order(info.label_kinds):
            if name != INSTANCE_KIND:
                labels[name] = label_kind(name).example(labels, (size, size), info, rng)
        samples.append(
            {
                "image": images[i],
                "labels": {
                    name: label_kind(name).to_sample(value, boxes_per_image, (size, size), info)
                    for name, value in labels.items()
                },
                "label_mask": dict.fromkeys(labels, True),
                "meta": {"image_id": i, "path": f"random{i}", "orig_shape": (size, size), "ratio": 1.0,
                         "pad": (0, 0)},
            }
        )  # fmt: skip
    return collate(samples)


def experiment(
    base: ExperimentConfig | None = None,
    *,
    model: str | Path | None = None,
    tasks: Sequence[str] | None = None,
    batch: int | None = None,
    size: int | None = None,
    precision: str | None = None,
    channels_last: bool | None = None,
) -> ExperimentConfig:
    """``base`` (default: the trainer's defaults) set up for benchmarking one step at a time.

    An optimiser step every step (nominal batch = batch), no warm-up ramp, no EMA, and a learning rate
    small enough that minutes of steps on one random batch never diverge; none of these change the cost
    of a step except the EMA, which the official trainer also runs only every optimiser step.
    """
    cfg = base or load_experiment(None)
    train = cfg.train
    train = dataclasses.replace(
        train,
        batch_size=batch or train.batch_size,
        img_size=size or train.img_size,
        precision=precision or train.precision,
        channels_last=train.channels_last if channels_last is None else channels_last,
    )
    optim = dataclasses.replace(
        cfg.optim, nominal_batch_size=train.batch_size, warmup_epochs=0.0, ema=False, lr0=1e-5
    )
    task_names = list(tasks) if tasks else list(cfg.tasks)
    enabled = set(resolve_tasks(task_names))
    return dataclasses.replace(
        cfg,
        model=str(repo_path(model)) if model else cfg.model,
        tasks=task_names,
        task_options={k: v for k, v in cfg.task_options.items() if k in enabled},
        balancer=dataclasses.replace(
            cfg.balancer, weights={k: v for k, v in cfg.balancer.weights.items() if k in enabled}
        ),
        train=train,
        optim=optim,
        synthetic=None,
    )


def demo_experiment() -> ExperimentConfig:
    """The demo's experiment config (``configs/experiments/synthetic.yaml``), model path resolved."""
    cfg = load_experiment(DEMO_EXPERIMENT)
    return dataclasses.replace(
        cfg, model=str(repo_path(cfg.model)) if isinstance(cfg.model, str) else cfg.model
    )


@dataclass
class TrainWorkload:
    """A trainer and a batch; ``step()`` runs one real training step.

    Attributes:
        trainer: The :class:`Trainer` (no hooks).
        batch: The batch every step trains on.
        autocast_dtype: What the config's precision resolved to (``None``: fp32).
    """

    trainer: Trainer
    batch: dict[str, Any]
    autocast_dtype: torch.dtype | None

    @property
    def batch_size(self) -> int:
        return int(self.batch["images"].shape[0])

    def step(self) -> None:
        self.trainer.run_step(self.batch)
        if self.trainer.state.skipped_steps:
            raise RuntimeError("a benchmark step was skipped (non-finite loss): the timing would be wrong")

    def training_flops(self) -> int:
        """FLOPs (2 × multiply-accumulates, every op the counter knows) of forward + losses + backward."""
        module = self.trainer.module
        batch = batch_to_device(self.batch, self.trainer.device)
        with FlopCounterMode(display=False) as counter:
            total, _, _ = module(batch)
            total.backward()
        self.trainer.optimizer.zero_grad(set_to_none=True)
        return int(counter.get_total_flops())


def build_train_workload(
    cfg: ExperimentConfig,
    info: DatasetInfo,
    device: torch.device,
    boxes_per_image: int = 5,
    seed: int = 0,
) -> TrainWorkload:
    """A :class:`TrainWorkload` for ``cfg`` (model, tasks, batch, size, precision, memory format)."""
    torch.manual_seed(seed)
    model = build_model(
        cfg.model,
        tasks=cfg.tasks,
        info=info,
        task_options=cfg.task_options,
        implicit_share=cfg.implicit_share,
    )
    balancer = build_balancer(
        cfg.balancer.name, list(model.tasks), cfg.balancer.weights, cfg.balancer.options
    )
    trainer = Trainer(cfg, model, balancer, [], device)
    trainer.model.train()
    batch = random_batch(cfg.train.batch_size, cfg.train.img_size, info, boxes_per_image, seed)
    return TrainWorkload(trainer, batch, resolve_precision(cfg.train.precision, device))


def build_model_for_inference(model_cfg: str | Path, nc: int = 80, seed: int = 0) -> UnifiedModel:
    """A detection model in eval mode whose weights several inference variants can share."""
    torch.manual_seed(seed)
    return build_model(repo_path(model_cfg), nc=nc).eval()


@dataclass
class InferenceWorkload:
    """An eval-mode forward pass (decoded outputs included) on a fixed input."""

    forward: Callable[[], Any]
    model: nn.Module
    batch_size: int
    images: torch.Tensor
    dtype: torch.dtype | None = None


def build_inference(
    model_cfg: str | Path,
    device: torch.device,
    *,
    batch: int,
    size: int,
    fused: bool,
    dtype: torch.dtype | None = None,
    channels_last: bool = True,
    nc: int = 80,
    task_options: dict[str, dict[str, Any]] | None = None,
    model: UnifiedModel | None = None,
    seed: int = 0,
) -> InferenceWorkload:
    """Our detection model ready for inference as the tools make it (:meth:`UnifiedModel.for_inference`:
    eval mode, optionally fused, channels-last unless told otherwise), under autocast ``dtype`` (``None``:
    fp32).

    Pass ``model`` to reuse one model's weights for several variants (fusing happens on a copy).
    """
    import copy

    torch.manual_seed(seed)
    net = (
        copy.deepcopy(model)
        if model is not None
        else build_model(repo_path(model_cfg), nc=nc, task_options=task_options)
    )
    net = net.to(device).for_inference(fuse=fused, channels_last=channels_last)
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)).to(device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)

    def forward() -> Any:
        with torch.inference_mode(), autocast_context(device, dtype):
            return net(images)

    return InferenceWorkload(forward, net, batch, images, dtype)


def compiled_inference(workload: InferenceWorkload) -> Callable[[], Any]:
    """``workload``'s forward through ``torch.compile`` (inductor, weights frozen as constants).

    Compilation happens on the first call, under the freezing setting, which is restored afterwards.
    """
    import torch._inductor.config as inductor_config

    compiled = torch.compile(workload.model)
    device = workload.images.device
    state = {"first": True}

    def forward() -> Any:
        # no_grad rather than inference_mode: compiled graphs cannot take inference-mode tensors.
        with torch.no_grad(), autocast_context(device, workload.dtype):
            if state["first"]:
                state["first"] = False
                with inductor_config.patch(freezing=True):
                    return compiled(workload.images)
            return compiled(workload.images)

    return forward


__all__ = [
    "DEMO_EXPERIMENT",
    "InferenceWorkload",
    "MODELS",
    "PAPER_MODEL",
    "TrainWorkload",
    "build_inference",
    "build_model_for_inference",
    "build_train_workload",
    "compiled_inference",
    "COCO_KIND_OPTIONS",
    "all_tasks",
    "coco_like_info",
    "demo_experiment",
    "demo_info",
    "experiment",
    "random_batch",
    "task_kinds",
]
