"""The joint trainer: forward once, every task's losses, a balancer, backward, optimiser step.

The trainer knows nothing about any task, balancer or batch key: the model computes every task's named
loss terms from the batch, the balancer turns their per-task sums into one scalar (and back-propagates
it), the optimiser and schedule come from :mod:`unified.engine.optim`, and hooks do logging, evaluation,
checkpointing, EMA and the time budget at seven fixed stages.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from unified.data.dataset import batch_to_device, iterate_loader
from unified.distributed import DistInfo, all_reduce_sum
from unified.engine.balancers import Balancer
from unified.engine.experiment import ExperimentConfig
from unified.engine.hooks import Hook
from unified.engine.optim import Schedule, build_optimizer
from unified.engine.precision import auto_cpu_dtype


class NonFiniteLossError(RuntimeError):
    """Training diverged: too many steps in a row had a NaN or Inf loss or gradient, or the weights did."""


@dataclass
class TrainState:
    """Everything about the run's progress that hooks read and checkpoints keep."""

    epoch: int = 0
    iteration: int = 0
    epoch_iteration: int = 0
    batches_per_epoch: int = 0
    optimizer_steps: int = 0
    end_of_epoch: bool = False
    best_fitness: float = -math.inf
    fitness: float = -math.inf
    nonfinite_in_row: int = 0
    skipped_steps: int = 0
    stop: bool = False
    step_logs: dict[str, float] = field(default_factory=dict)
    epoch_sums: dict[str, float] = field(default_factory=dict)
    epoch_count: int = 0
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    #: The epoch whose end ``metrics`` were measured at (-1: none yet this session).
    evaluated_epoch: int = -1
    started_at: float = field(default_factory=time.time)

    def epoch_means(self) -> dict[str, float]:
        return {k: v / max(self.epoch_count, 1) for k, v in self.epoch_sums.items()}


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and torch; in deterministic mode also ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bfloat16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision setting (None: full fp32).

    ``auto``: fp16 on CUDA; on a CPU bf16 only where a short measured probe finds bf16 convolutions faster
    than fp32 ones (:mod:`unified.engine.precision`: hosts with the same flags differ by 2x either way).
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError("train.precision=fp16 needs CUDA; on CPU use bf16 or fp32")
        return torch.float16
    if device.type == "cuda":
        return torch.float16
    return auto_cpu_dtype()


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class TrainingModule(nn.Module):
    """What DistributedDataParallel wraps: the model and the balancer, so learnable loss weights sync."""

    def __init__(self, model: nn.Module, balancer: Balancer) -> None:
        super().__init__()
        self.model = model
        self.balancer = balancer

    def forward(
        self, batch: dict[str, Any]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
        terms = self.model.losses(batch)
        task_totals = {name: torch.stack(list(t.values())).sum() for name, t in terms.items()}
        total = self.balancer(task_totals)
        return total, task_totals, terms


class Trainer:
    """Runs the joint training loop.

    Args:
        cfg: The resolved experiment config.
        model: A ``UnifiedModel`` (its ``tasks`` give the losses).
        balancer: Combines per-task losses.
        train_loader: Yields batches in the format of ``docs/ARCHITECTURE.md``; its ``sampler`` may have
            ``set_epoch``.
        device: This rank's device.
        dist_info: Rank and world size.
        hooks: Called at the seven stages, in order.
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        model: nn.Module,
        balancer: Balancer,
        train_loader: Any,
        device: torch.device,
        dist_info: DistInfo | None = None,
        hooks: Sequence[Hook] = (),
    ) -> None:
        self.cfg = cfg
        self.device = device
        self.dist = dist_info or DistInfo()
        self.model = model.to(device)
        if cfg.train.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.balancer = balancer.to(device)
        shared = list(self.model.body.parameters())
        self.balancer.bind(shared, list(self.model.parameters()))
        self.module = TrainingModule(self.model, self.balancer)
        if self.dist.enabled:
            if self.balancer.needs_task_gradients:
                warnings.warn(
                    f"balancer {cfg.balancer.name!r} back-propagates every task separately and all-reduces the "
                    "projected gradients itself (see its docstring): DDP's gradient hooks are not used",
                    stacklevel=2,
                )
            self.wrapped: nn.Module = nn.parallel.DistributedDataParallel(
                self.module,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=False,
            )
        else:
            self.wrapped = self.module
        self.train_loader = train_loader
        self.hooks = list(hooks)
        self.state = TrainState()
        self.autocast_dtype = resolve_precision(cfg.train.precision, device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.autocast_dtype is torch.float16)
        self.world_batch = cfg.train.batch_size
        self.schedule = Schedule(cfg.optim, cfg.train.epochs, self.world_batch)
        self.optimizer = build_optimizer(
            cfg.optim,
            self.model,
            self.balancer.parameters(),
            self.balancer.decay_exempt(),
            self.world_batch,
            device,
        )
        #: A hook's average of the weights (EMA), evaluated and saved instead of the model when set.
        self.averaged_model: nn.Module | None = None
        self.last_batch_terms: dict[str, dict[str, float]] = {}
        # BatchNorm updates its running statistics during the forward pass: a forward pass that turns out
        # non-finite is undone, or its NaN statistics would poison evaluation and every later checkpoint.
        self._buffers = list(self.model.buffers())
        self._buffer_snapshot = [b.detach().clone() for b in self._buffers]
        self._gradient_culprits: list[str] = []  # where the last non-finite gradients were
        self._scaler_search = False  # the last skipped step was fp16 GradScaler lowering its scale

    # ----------------------------------------------------------------------------------------- setup
    @property
    def epochs(self) -> int:
        """Epochs of this run's schedule: ``train.epochs``, or fewer when a time budget shortened it."""
        return self.schedule.epochs

    @property
    def accumulate(self) -> int:
        """Micro-batches per optimiser step now."""
        return self.schedule.accumulate

    # ----------------------------------------------------------------------------------------- loop
    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast_context(self.device, self.autocast_dtype)

    def eval_model(self) -> nn.Module:
        """The model to evaluate and save: the averaged one when a hook keeps it (EMA)."""
        return self.averaged_model if self.averaged_model is not None else self.model

    def train(self) -> TrainState:
        """Run from ``state.epoch`` to the configured number of epochs (or until a hook sets ``stop``)."""
        self.state.batches_per_epoch = len(self.train_loader)
        if self.state.batches_per_epoch == 0:
            raise RuntimeError("the training loader yields no batches: is the training split empty?")
        for hook in self.hooks:
            hook.before_train(self)
        try:
            while self.state.epoch < self.epochs and not self.state.stop:
                self.train_one_epoch()
        finally:
            for hook in self.hooks:
                hook.after_train(self)
        return self.state

    def train_one_epoch(self) -> None:
        s = self.state
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(s.epoch)
        generator = getattr(self.train_loader, "generator", None)
        if generator is not None:
            generator.manual_seed(self.cfg.train.seed * 1000003 + s.epoch)
        s.epoch_iteration, s.epoch_sums, s.epoch_count = 0, {}, 0
        s.end_of_epoch = False
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        for hook in self.hooks:
            hook.before_epoch(self)
        for batch in iterate_loader(self.train_loader):
            s.end_of_epoch = s.epoch_iteration == s.batches_per_epoch - 1
            self.run_step(batch)
            if s.end_of_epoch:  # hooks see the iteration of the epoch's last step, skipped or not
                self._end_of_epoch_balancing()
                self._check_finite_weights()  # before evaluation and checkpoints see them
                for hook in self.hooks:
                    hook.after_epoch(self)
            s.iteration += 1
            s.epoch_iteration += 1
            if s.stop:
                break
        s.epoch += 1

    def run_step(self, batch: dict[str, Any]) -> None:
        s = self.state
        self.schedule.apply(self.optimizer, s.epoch, s.iteration, s.batches_per_epoch)
        for hook in self.hooks:
            hook.before_step(self)
        memory_format = torch.channels_last if self.cfg.train.channels_last else None
        batch = batch_to_device(batch, self.device, memory_format)

        # A balancer that back-propagates per task reduces gradients itself, so DDP must not expect a backward.
        no_sync = self.dist.enabled and self.balancer.needs_task_gradients
        if self._buffers:
            torch._foreach_copy_(self._buffer_snapshot, self._buffers)  # one fused copy
        if self.scaler.is_enabled():
            self.balancer.loss_scale = self.scaler.scale(torch.ones((), device=self.device))
        with self.autocast(), self.wrapped.no_sync() if no_sync else contextlib.nullcontext():
            total, task_totals, terms = self.wrapped(batch)
        # One host sync per step: the finiteness check and the logged values travel together.
        names = [(t, k) for t in terms for k in terms[t]]
        values = torch.stack([terms[t][k].detach() for t, k in names] + [total.detach()])
        bad = (~torch.isfinite(values)).any().to(torch.float32).reshape(1)
        if self.dist.enabled:
            bad = all_reduce_sum(bad)
        host = values.tolist()
        if float(bad) > 0:
            if self._buffers:
                torch._foreach_copy_(self._buffers, self._buffer_snapshot)
            self._skip_step(names, host, "loss")
            return
        # Loss terms are per-image sums (see Task.loss) and DDP averages gradients over ranks: scaling by
        # the world size makes N ranks with batch b train like one process with batch N·b.
        scaled = total * self.dist.world_size if self.dist.enabled else total
        if self.scaler.is_enabled():
            # fp16 AMP: a balancer that back-propagates each task's loss itself (PCGrad) must see them scaled
            # as the total is, or unscale_ would divide its unscaled gradients by the loss scale.
            scaled = self.scaler.scale(scaled)
            task_totals = {t: self.scaler.scale(v) for t, v in task_totals.items()}
        self.balancer.backward(scaled, task_totals)
        for hook in self.hooks:
            hook.after_backward(self)
        if (s.iteration + 1) % self.accumulate == 0 or s.end_of_epoch:
            if not self._optimizer_step():
                self._skip_step(names, host, "gradient")
                return
        s.nonfinite_in_row = 0
        logs = {f"{t}/{k}": v for (t, k), v in zip(names, host)}
        for task in task_totals:
            logs[f"{task}/total"] = sum(v for (t, _), v in zip(names, host) if t == task)
        logs["total"] = host[-1]
        for task, weight in self.balancer.current_weights().items():
            logs[f"weight/{task}"] = weight
        s.step_logs = logs
        for key, value in logs.items():
            s.epoch_sums[key] = s.epoch_sums.get(key, 0.0) + value
        s.epoch_count += 1
        for hook in self.hooks:
            hook.after_step(self)

    def _end_of_epoch_balancing(self) -> None:
        """Epoch-level balancer update, before the end-of-epoch hooks so checkpoints include it."""
        means = self.state.epoch_means()
        if all(f"{t}/total" in means for t in self.balancer.tasks):
            self.balancer.epoch_end({t: means[f"{t}/total"] for t in self.balancer.tasks})

    def _check_finite_weights(self) -> None:
        """Stop as diverged when the weights, their average or the balancer hold NaN or Inf.

        A step with finite gradients can still make the weights non-finite (``lr0`` huge); every later step
        is then skipped for its NaN loss, in a short epoch fewer times than ``train.max_nonfinite_steps``,
        and such a run used to end with exit 0 and NaN in last.pt, best.pt and the EMA. Checked once per
        epoch, so no checkpoint ever holds such weights.

        Raises:
            NonFiniteLossError: naming where the non-finite tensors are.
        """
        modules = {"model": self.model, "ema": self.averaged_model, "balancer": self.balancer}
        found = [
            f"{label} ({where})" for label, m in modules.items() if m is not None and (where := _nonfinite(m))
        ]
        flag = torch.tensor([float(bool(found))], device=self.device)
        if self.dist.enabled:  # the average lives on rank 0 only: every rank must stop together
            flag = all_reduce_sum(flag)
        if float(flag) == 0:
            return
        raise NonFiniteLossError(
            f"epoch {self.state.epoch + 1}: training diverged: NaN or Inf in "
            f"{', '.join(found) or 'another rank'}; stopping before this epoch is evaluated or saved, so no "
            "checkpoint holds these weights (weights/last.pt of an earlier epoch, if any, is intact). Lower "
            "optim.lr0, check the data, or try train.precision=fp32."
        )

    def _optimizer_step(self) -> bool:
        """Unscale, clip, check gradients, step. Returns False (and drops the gradients) if any is non-finite."""
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        # Fused optimiser kernels read a gradient's memory as if laid out like its parameter: a gradient
        # set by hand (a balancer, a hook) in another layout (contiguous for a channels-last weight) would
        # update the wrong elements, silently.
        for p in params:
            if p.grad is not None and p.grad.stride() != p.stride():
                p.grad = torch.empty_like(p).copy_(p.grad)
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)
        clip = self.cfg.optim.grad_clip
        # The norm first, clipping after (as clip_grad_norm_ does): clipping by a NaN norm would turn every
        # gradient into NaN and hide which task's gradients were bad.
        norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        if not torch.isfinite(norm):
            self._gradient_culprits = self._nonfinite_gradient_owners()
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler.is_enabled():
                self.scaler.update()
                # GradScaler finds its scale by overflowing (65536 halved per inf step): while the scale is
                # still above 1 an inf gradient is that search, not divergence, and counts toward no limit.
                self._scaler_search = self.scaler.get_scale() >= 1.0
            return False
        if clip > 0:
            torch.nn.utils.clip_grads_with_norm_(params, clip, norm)
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.balancer.after_step()
        self.state.optimizer_steps += 1
        return True

    def _nonfinite_gradient_owners(self) -> list[str]:
        """Where the NaN/Inf gradients are: ``heads.<task>`` first (it names the task), then body, bank..."""
        owners: dict[str, int] = {}
        named = [*self.model.named_parameters(), *(("balancer", p) for p in self.balancer.parameters())]
        for name, p in named:
            if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                parts = name.split(".")
                owner = ".".join(parts[:2]) if parts[0] == "heads" else parts[0]
                owners[owner] = owners.get(owner, 0) + 1
        ordered = sorted(owners, key=lambda o: not o.startswith("heads."))
        return [f"{o} ({owners[o]} tensor{'s' if owners[o] > 1 else ''})" for o in ordered]

    def _skip_step(self, names: list[tuple[str, str]], host: list[float], what: str) -> None:
        s = self.state
        if what == "gradient" and self._scaler_search:
            self._scaler_search = False
            s.skipped_steps += 1
            for hook in self.hooks:
                hook.after_step(self)
            return
        s.nonfinite_in_row += 1
        s.skipped_steps += 1
        if what == "gradient":
            culprits = self._gradient_culprits or ["(gradient)"]
        else:
            culprits = [f"{t}.{k}" for (t, k), v in zip(names, host) if not math.isfinite(v)]
        self.optimizer.zero_grad(set_to_none=True)
        if self.dist.is_main:
            warnings.warn(
                f"epoch {s.epoch + 1} iteration {s.iteration}: non-finite {what} in {', '.join(culprits)}; "
                f"step skipped ({s.nonfinite_in_row} in a row, limit {self.cfg.train.max_nonfinite_steps})",
                stacklevel=2,
            )
        if s.nonfinite_in_row >= self.cfg.train.max_nonfinite_steps:
            raise NonFiniteLossError(
                f"{s.nonfinite_in_row} steps in a row had a non-finite {what} (last: {', '.join(culprits)}); "
                "stopping. The last good checkpoint (weights/last.pt) is intact. Lower optim.lr0, check the "
                "data, or try train.precision=fp32."
            )
        for hook in self.hooks:
            hook.after_step(self)

    # ----------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        s = self.state
        return {
            "epoch": s.epoch,
            "iteration": s.iteration,
            "optimizer_steps": s.optimizer_steps,
            "best_fitness": s.best_fitness,
            "skipped_steps": s.skipped_steps,
            "model": self.model.state_dict(),
            "balancer": self.balancer.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "schedule": self.schedule.state_dict(),
            **{h.state_key: h.state_dict() for h in self.hooks if h.state_key is not None},
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
                "python": list(random.getstate()[1]),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.balancer.load_state_dict(state["balancer"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        for hook in self.hooks:
            if hook.state_key is not None:
                hook.load_state_dict(state.get(hook.state_key))
        s = self.state
        s.epoch, s.iteration = int(state["epoch"]), int(state["iteration"])
        s.optimizer_steps = int(state.get("optimizer_steps", 0))
        s.best_fitness = float(state["best_fitness"])
        s.skipped_steps = int(state.get("skipped_steps", 0))
        self.schedule.load_state_dict(state.get("schedule", {}))
        rng = state.get("rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            np_state = list(np.random.get_state())
            np_state[1] = rng["numpy"].numpy().astype(np.uint32)
            np.random.set_state(tuple(np_state))
            py_state = random.getstate()
            random.setstate((py_state[0], tuple(int(v) for v in rng["python"]), py_state[2]))


def _nonfinite(module: nn.Module) -> str:
    """``""`` when every floating tensor of ``module``'s state is finite, else how many are not and the first."""
    tensors = [(name, t) for name, t in module.state_dict().items() if t.is_floating_point()]
    if not tensors:
        return ""
    finite = torch.stack([torch.isfinite(t).all() for _, t in tensors]).tolist()  # one host sync
    bad = [name for (name, _), ok in zip(tensors, finite) if not ok]
    if not bad:
        return ""
    return f"{len(bad)} tensor{'s' if len(bad) > 1 else ''}, first {bad[0]}"
