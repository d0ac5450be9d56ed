"""Loss balancers: turn every task's loss into one scalar to back-propagate.

Every balancer is an ``nn.Module`` that lives inside the module DistributedDataParallel wraps, so any
learnable weights (uncertainty log-variances, GradNorm weights) are model parameters and synchronise
across ranks like every other parameter. The trainer calls the same three methods on every balancer:
``forward`` (combine), ``backward`` (usually ``total.backward()``) and ``epoch_end``; it never asks which
balancer it has.

A balancer's options (``balancer.options`` in the experiment YAML) are a dataclass named by its
``options_class``: :func:`build_balancer` validates the YAML mapping into it with
:func:`unified.config.from_dict`, so an unknown or mistyped option is a ``ConfigError`` naming
``balancer.options.<key>``, like every other section. They are checked when the run starts, not when the
experiment is loaded, because a plugin listed under ``plugins:`` may register the balancer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch import nn

from unified.config import ConfigError, check, from_dict
from unified.registry import Registry

BALANCERS: Registry[type[Balancer]] = Registry("balancer")


@dataclass
class BalancerOptions:
    """Options of a balancer that takes none; balancers with options subclass it (any dataclass works)."""


@dataclass
class UncertaintyOptions(BalancerOptions):
    """Options of :class:`UncertaintyBalancer`.

    Attributes:
        init_log_var: Starting log-variance ``s`` of every task (0: every task starts at weight 1).
    """

    init_log_var: float = 0.0

    def __post_init__(self) -> None:
        check(math.isfinite(self.init_log_var), "init_log_var", f"must be finite, got {self.init_log_var}")


@dataclass
class DWAOptions(BalancerOptions):
    """Options of :class:`DWABalancer`.

    Attributes:
        temperature: Softmax temperature; larger values make the weights more equal.
    """

    temperature: float = 2.0

    def __post_init__(self) -> None:
        check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")


@dataclass
class GradNormOptions(BalancerOptions):
    """Options of :class:`GradNormBalancer`.

    Attributes:
        alpha: Strength of the pull towards equal training rates (0: equal gradient norms only).
    """

    alpha: float = 1.5

    def __post_init__(self) -> None:
        check(0 <= self.alpha < math.inf, "alpha", f"must be >= 0 and finite, got {self.alpha}")


@dataclass
class SeedOptions(BalancerOptions):
    """Options of the balancers that draw random numbers (``pcgrad``, ``rlw``).

    Attributes:
        seed: Seed of the balancer's own generator (independent of the training seed).
    """

    seed: int = 0


class Balancer(nn.Module):
    """Base class: combines per-task scalar losses into one.

    Args:
        tasks: Task names, in model order.
        weights: Optional fixed starting weight per task (default 1.0).
        options: An instance of ``options_class`` (default: its defaults).
    """

    #: True when the balancer back-propagates each task separately (costs one backward pass per task).
    needs_task_gradients: ClassVar[bool] = False
    #: The dataclass ``balancer.options`` is validated into; a subclass with options sets its own.
    options_class: ClassVar[type] = BalancerOptions
    #: fp16 AMP's current loss scale (a tensor on the device), set by the trainer before each forward: a
    #: balancer that takes gradients inside ``forward`` (GradNorm) scales its losses by it first, so that
    #: small fp16 gradients do not flush to zero, and divides it out of what it measures.
    loss_scale: torch.Tensor | float = 1.0

    def __init__(
        self, tasks: Sequence[str], weights: dict[str, float] | None = None, options: Any = None
    ) -> None:
        super().__init__()
        if options is None:
            options = self.options_class()
        if not isinstance(options, self.options_class):
            raise TypeError(
                f"{type(self).__name__} takes a {self.options_class.__name__} as options, got "
                f"{type(options).__name__} (build_balancer turns a mapping into one)"
            )
        self.options = options
        self.tasks = list(tasks)
        weights = weights or {}
        unknown = sorted(set(weights) - set(self.tasks))
        if unknown:
            raise ConfigError(
                f"key 'balancer.weights': weights for tasks that are not enabled: {unknown}; "
                f"enabled: {self.tasks}"
            )
        self.register_buffer(
            "base_weights", torch.tensor([float(weights.get(t, 1.0)) for t in self.tasks]), persistent=True
        )
        self._shared: list[nn.Parameter] = []
        self._all_params: list[nn.Parameter] = []

    def bind(self, shared_parameters: Sequence[nn.Parameter], all_parameters: Sequence[nn.Parameter]) -> None:
        """Give the balancer the parameters all tasks share (the body) and every trainable parameter."""
        self._shared = [p for p in shared_parameters if p.requires_grad]
        self._all_params = [p for p in all_parameters if p.requires_grad]

    def stacked(self, task_losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([task_losses[t] for t in self.tasks])

    def forward(self, task_losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return (self.base_weights * self.stacked(task_losses)).sum()

    def current_weights(self) -> dict[str, float]:
        """The weight each task's loss gets now (for logging)."""
        return {t: float(w) for t, w in zip(self.tasks, self.base_weights.tolist())}

    def backward(self, total: torch.Tensor, task_losses: dict[str, torch.Tensor]) -> None:
        """Back-propagate the combined loss (balancers that need per-task gradients override this)."""
        total.backward()

    def after_step(self) -> None:
        """Called after every optimiser step (GradNorm renormalises its weights here)."""

    def epoch_end(self, mean_task_losses: dict[str, float]) -> None:
        """Called once per epoch with each task's mean loss (for epoch-level schemes such as DWA)."""

    def decay_exempt(self) -> list[nn.Parameter]:
        """Parameters of the balancer: never weight-decayed."""
        return list(self.parameters())


@BALANCERS.register("fixed")
class FixedBalancer(Balancer):
    """Fixed weights from the config (1.0 per task by default)."""


@BALANCERS.register("uncertainty")
class UncertaintyBalancer(Balancer):
    """Homoscedastic uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018).

    Each task has a learnable log-variance ``s``; the combined loss is ``Σ exp(-s)·L + s``. The ``s`` are
    parameters of this module, so they are part of the DDP-wrapped model and are averaged like any weight;
    they are excluded from weight decay.
    """

    options_class = UncertaintyOptions
    options: UncertaintyOptions

    def __init__(
        self,
        tasks: Sequence[str],
        weights: dict[str, float] | None = None,
        options: UncertaintyOptions | None = None,
    ) -> None:
        super().__init__(tasks, weights, options)
        self.log_vars = nn.Parameter(torch.full((len(self.tasks),), float(self.options.init_log_var)))

    def forward(self, task_losses: dict[str, torch.Tensor]) -> torch.Tensor:
        losses = self.base_weights * self.stacked(task_losses)
        return (torch.exp(-self.log_vars) * losses + self.log_vars).sum()

    def current_weights(self) -> dict[str, float]:
        w = (self.base_weights * torch.exp(-self.log_vars.detach())).tolist()
        return dict(zip(self.tasks, w))


@BALANCERS.register("dwa")
class DWABalancer(Balancer):
    """Dynamic Weight Average (Liu, Johns and Davison, CVPR 2019).

    ``w_t = T · softmax(r_t / temperature)`` with ``r_t = L_t(e-1) / L_t(e-2)`` the ratio of the task's mean
    loss over the last two epochs; weights are 1 for the first two epochs.
    """

    options_class = DWAOptions
    options: DWAOptions

    def __init__(
        self, tasks: Sequence[str], weights: dict[str, float] | None = None, options: DWAOptions | None = None
    ) -> None:
        super().__init__(tasks, weights, options)
        self.register_buffer("history", torch.zeros(2, len(self.tasks)))
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("dynamic", torch.ones(len(self.tasks)))

    def forward(self, task_losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return (self.dynamic * self.base_weights * self.stacked(task_losses)).sum()

    def current_weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, (self.dynamic * self.base_weights).tolist()))

    def epoch_end(self, mean_task_losses: dict[str, float]) -> None:
        latest = torch.tensor([mean_task_losses[t] for t in self.tasks], device=self.history.device)
        self.history[0] = self.history[1]
        self.history[1] = latest
        self.epochs_seen += 1
        if int(self.epochs_seen) >= 2:
            ratio = self.history[1] / self.history[0].clamp_min(1e-12)
            self.dynamic.copy_(len(self.tasks) * torch.softmax(ratio / self.options.temperature, dim=0))


@BALANCERS.register("gradnorm")
class GradNormBalancer(Balancer):
    """GradNorm (Chen et al., ICML 2018): learnable weights that equalise gradient norms on shared layers.

    The gradient norm of each task's loss is measured on the last shared parameters (the body's output
    layer) with ``torch.autograd.grad``, which costs one partial backward per task through the heads only.
    The GradNorm objective ``Σ |w_t·g_t − ḡ·r_t^α|`` is added to the total with the network loss using
    detached weights, so one ``backward`` gives the network its gradients and the weights theirs; both are
    all-reduced by DDP. Weights are renormalised to sum to the number of tasks after every step.
    """

    options_class = GradNormOptions
    options: GradNormOptions

    def __init__(
        self,
        tasks: Sequence[str],
        weights: dict[str, float] | None = None,
        options: GradNormOptions | None = None,
    ) -> None:
        super().__init__(tasks, weights, options)
        self.task_weights = nn.Parameter(self.base_weights.clone())
        self.register_buffer("initial_losses", torch.zeros(len(self.tasks)))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self._last_layer: list[nn.Parameter] = []

    def bind(self, shared_parameters: Sequence[nn.Parameter], all_parameters: Sequence[nn.Parameter]) -> None:
        super().bind(shared_parameters, all_parameters)
        if not self._shared:
            raise ValueError("GradNorm needs shared parameters, and the model has none that require grad")
        # The last shared layer: its weight (and bias) are the last parameters registered by the body.
        self._last_layer = self._shared[-2:]

    def forward(self, task_losses: dict[str, torch.Tensor]) -> torch.Tensor:
        losses = self.stacked(task_losses)
        weights = self.task_weights
        network_loss = (weights.detach() * losses).sum()
        if not torch.is_grad_enabled():
            return network_loss
        if not bool(self.initialised):
            self.initial_losses.copy_(losses.detach())
            self.initialised.fill_(True)
        norms = []
        for loss in losses:
            grads = torch.autograd.grad(
                loss * self.loss_scale, self._last_layer, retain_graph=True, allow_unused=True
            )
            flat = [g.float().reshape(-1) for g in grads if g is not None]
            norms.append(torch.cat(flat).norm() if flat else losses.new_zeros(()))
        grad_norms = torch.stack(norms).detach() / self.loss_scale
        ratios = losses.detach() / self.initial_losses.clamp_min(1e-12)
        relative = ratios / ratios.mean().clamp_min(1e-12)
        target = (weights.detach() * grad_norms).mean() * relative.pow(self.options.alpha)
        gradnorm_loss = (weights * grad_norms - target).abs().sum()
        return network_loss + gradnorm_loss

    def current_weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.task_weights.detach().tolist()))

    @torch.no_grad()
    def renormalise(self) -> None:
        """Keep the weights positive and summing to the number of tasks (called after each step)."""
        self.task_weights.clamp_(min=1e-3)
        self.task_weights.mul_(len(self.tasks) / self.task_weights.sum())

    def after_step(self) -> None:
        self.renormalise()


@BALANCERS.register("pcgrad")
class PCGradBalancer(Balancer):
    """PCGrad, projecting conflicting gradients (Yu et al., NeurIPS 2020).

    Cost: one backward pass per task through the whole network (T tasks → about T× the backward time of
    the other balancers) and one extra copy of the shared gradients per task in memory.

    Under DDP each rank projects the gradients of its own batch, then the projected gradients are
    averaged across ranks with an explicit all-reduce (DDP's own gradient hooks do not run, because the
    per-task gradients come from ``torch.autograd.grad``). The result is the sum of per-rank projections,
    not the projection of the global per-task gradients: it matches single-process PCGrad only when
    the ranks see the same conflicts.
    """

    needs_task_gradients = True
    options_class = SeedOptions
    options: SeedOptions

    def __init__(
        self,
        tasks: Sequence[str],
        weights: dict[str, float] | None = None,
        options: SeedOptions | None = None,
    ) -> None:
        super().__init__(tasks, weights, options)
        self._generator = torch.Generator().manual_seed(self.options.seed)

    def backward(self, total: torch.Tensor, task_losses: dict[str, torch.Tensor]) -> None:
        if not self._all_params:
            raise RuntimeError("PCGrad needs the trainable parameters: call bind(shared, all) first")
        params = self._all_params
        shared_ids = {id(p) for p in self._shared}
        per_task: list[list[torch.Tensor | None]] = []
        weights = self.base_weights.tolist()
        for index, task in enumerate(self.tasks):
            grads = torch.autograd.grad(
                task_losses[task] * weights[index], params, retain_graph=True, allow_unused=True
            )
            per_task.append(list(grads))
        shared_index = [i for i, p in enumerate(params) if id(p) in shared_ids]
        is_shared = set(shared_index)

        def flat(grads: list[torch.Tensor | None]) -> torch.Tensor:
            return torch.cat(
                [
                    (grads[i] if grads[i] is not None else torch.zeros_like(params[i])).reshape(-1)
                    for i in shared_index
                ]
            )

        shared = [flat(g) for g in per_task]
        projected = [g.clone() for g in shared]
        for i in range(len(shared)):
            order = torch.randperm(len(shared), generator=self._generator).tolist()
            for j in order:
                if i == j:
                    continue
                dot = torch.dot(projected[i], shared[j])
                if dot < 0:
                    projected[i] -= dot / shared[j].pow(2).sum().clamp_min(1e-20) * shared[j]
        merged_shared = torch.stack(projected).sum(0)
        # This micro-batch's gradient of every parameter, flat and in parameter order: one all-reduce.
        pieces: list[torch.Tensor] = []
        offset = 0
        for i, p in enumerate(params):
            if i in is_shared:
                pieces.append(merged_shared[offset : offset + p.numel()])
                offset += p.numel()
            else:
                parts = [g[i] for g in per_task if g[i] is not None]
                pieces.append(torch.stack(parts).sum(0).reshape(-1) if parts else p.new_zeros(p.numel()))
        step = torch.cat(pieces)
        if dist.is_available() and dist.is_initialized():
            # Losses are per-image sums (see Task.loss): the global gradient is the sum over ranks.
            dist.all_reduce(step)
        offset = 0
        for p in params:
            g = step[offset : offset + p.numel()].view(p.shape)
            offset += p.numel()
            # Accumulate, as backward() does, so gradient accumulation over micro-batches keeps every one;
            # a new gradient takes its parameter's memory layout (fused optimisers read it as laid out so).
            if p.grad is None:
                p.grad = torch.empty_like(p).copy_(g)
            else:
                p.grad.add_(g)


@BALANCERS.register("rlw")
class RandomLossWeighting(Balancer):
    """Random loss weighting (Lin et al., TMLR 2022): weights drawn from softmax(N(0, 1)) every step."""

    options_class = SeedOptions
    options: SeedOptions

    def __init__(
        self,
        tasks: Sequence[str],
        weights: dict[str, float] | None = None,
        options: SeedOptions | None = None,
    ) -> None:
        super().__init__(tasks, weights, options)
        self._generator = torch.Generator().manual_seed(self.options.seed)
        self.register_buffer("last", torch.ones(len(self.tasks)))

    def forward(self, task_losses: dict[str, torch.Tensor]) -> torch.Tensor:
        losses = self.stacked(task_losses)
        if torch.is_grad_enabled():
            draw = torch.softmax(torch.randn(len(self.tasks), generator=self._generator), 0) * len(self.tasks)
            self.last.copy_(draw)
        return (self.last * self.base_weights * losses).sum()

    def current_weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, (self.last * self.base_weights).tolist()))


def balancer_options(
    name: str, options: Mapping[str, Any] | None = None, *, source: str | None = None
) -> Any:
    """Validate ``balancer.options`` against the ``options_class`` of the balancer registered as ``name``.

    Args:
        name: The registered balancer name (``balancer.name``).
        options: The YAML mapping, or an ``options_class`` instance (returned as it is).
        source: Where the options come from (a file name), for error messages.

    Raises:
        RegistryError: when no balancer is registered as ``name`` (listing those that are).
        ConfigError: naming ``balancer.options.<key>`` for an unknown key (with the closest valid one), a
            wrong type or a bad value.
    """
    cls = BALANCERS.get(name)
    if isinstance(options, cls.options_class):
        return options
    return from_dict(cls.options_class, options or {}, source=source, prefix="balancer.options")


def build_balancer(
    name: str,
    tasks: Sequence[str],
    weights: Mapping[str, float] | None = None,
    options: Mapping[str, Any] | None = None,
    *,
    source: str | None = None,
) -> Balancer:
    """Instantiate a registered balancer from its config section (``balancer.name/weights/options``).

    Raises:
        RegistryError: when no balancer is registered as ``name``.
        ConfigError: for a bad option (see :func:`balancer_options`) or a weight for a task that is not
            enabled.
    """
    cls = BALANCERS.get(name)
    return cls(tasks, dict(weights or {}), balancer_options(name, options, source=source))


__all__ = [
    "BALANCERS",
    "Balancer",
    "BalancerOptions",
    "DWABalancer",
    "DWAOptions",
    "FixedBalancer",
    "GradNormBalancer",
    "GradNormOptions",
    "PCGradBalancer",
    "RandomLossWeighting",
    "SeedOptions",
    "UncertaintyBalancer",
    "UncertaintyOptions",
    "balancer_options",
    "build_balancer",
]
