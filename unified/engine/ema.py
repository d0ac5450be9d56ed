"""Exponential moving average of the weights (as the official YOLOR trainer), as a hook.

The averaged model is what evaluation and ``best.pt`` use; it is updated after every optimiser step, on
the main rank only (the others never evaluate), and kept in checkpoints under ``ema``.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from unified.engine.hooks import Hook

if TYPE_CHECKING:
    from unified.engine.trainer import Trainer


class ModelEMA:
    """Exponential moving average of the model weights (decay ramps up over the first updates)."""

    def __init__(
        self, model: nn.Module, decay: float = 0.9999, ramp: float = 2000.0, updates: int = 0
    ) -> None:
        self.ema = copy.deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.ramp = ramp
        self.updates = updates
        self._source: nn.Module | None = None
        self._lists: tuple[tuple[list[torch.Tensor], list[torch.Tensor]], ...] | None = None

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.ramp))
        if self._lists is None or model is not self._source:
            self.refresh(model)
        assert self._lists is not None
        (ema_floats, model_floats), (ema_rest, model_rest) = self._lists
        # One fused lerp over every tensor, ema += (1 - d) * (model - ema): two state_dicts and a few
        # hundred small ops per step were 9 % of a demo training step on 2 CPU cores.
        if ema_floats:
            torch._foreach_lerp_(ema_floats, model_floats, 1.0 - d)
        if ema_rest:
            torch._foreach_copy_(ema_rest, model_rest)

    def refresh(self, model: nn.Module) -> None:
        """Pair the averaged tensors with ``model``'s again, floating point apart from the rest (integer
        counters are copied, not averaged); a tensor shared by two modules is paired, and averaged, once.

        The pairs hold the parameter objects, so a new ``.data`` (``model.to(...)``) stays followed; a
        buffer replaced by another object is not until this is called (:class:`EMAHook` calls it every
        epoch; walking the modules every step cost more than the average itself).
        """
        ema = [*self.ema.parameters(), *self.ema.buffers()]
        live = [*model.parameters(), *model.buffers()]
        if len(ema) != len(live):
            raise ValueError(f"the averaged model has {len(ema)} tensors, the model {len(live)}")
        floats = [i for i, t in enumerate(ema) if t.dtype.is_floating_point]
        rest = [i for i, t in enumerate(ema) if not t.dtype.is_floating_point]
        self._source = model
        self._lists = (
            ([ema[i] for i in floats], [live[i] for i in floats]),
            ([ema[i] for i in rest], [live[i] for i in rest]),
        )

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.ema.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema.load_state_dict(state["model"])
        self.updates = int(state["updates"])
        self._lists = None  # paired again at the next update


class EMAHook(Hook):
    """Keeps a :class:`ModelEMA` of ``trainer.model`` and hands it to the trainer as its averaged model.

    Args:
        decay: Final decay of the average.
        ramp: Optimiser steps over which the decay ramps up.
        enabled: Whether this rank averages (the main rank; the others never evaluate).
    """

    state_key = "ema"

    def __init__(self, decay: float, ramp: float, enabled: bool = True) -> None:
        self.decay = decay
        self.ramp = ramp
        self.enabled = enabled
        self.average: ModelEMA | None = None
        self._pending: dict[str, Any] | None = None
        self._steps_seen = 0

    def _ensure(self, trainer: Trainer) -> None:
        if self.enabled and self.average is None:
            self.average = ModelEMA(trainer.model, self.decay, self.ramp)
            if self._pending is not None:
                self.average.load_state_dict(self._pending)
                self._pending = None
            trainer.averaged_model = self.average.ema
        self._steps_seen = trainer.state.optimizer_steps

    def before_train(self, trainer: Trainer) -> None:
        self._ensure(trainer)

    def before_epoch(self, trainer: Trainer) -> None:
        if self.average is not None:
            self.average.refresh(trainer.model)

    def after_step(self, trainer: Trainer) -> None:
        # After an optimiser step, not every micro-batch: gradient accumulation steps every few batches.
        if self.average is not None and trainer.state.optimizer_steps != self._steps_seen:
            self._steps_seen = trainer.state.optimizer_steps
            self.average.update(trainer.model)

    def state_dict(self) -> dict[str, Any] | None:
        return self.average.state_dict() if self.average is not None else self._pending

    def load_state_dict(self, state: Any) -> None:
        if not self.enabled or state is None:
            return
        if self.average is None:
            self._pending = state  # the copy of the model is made when training starts
        else:
            self.average.load_state_dict(state)


__all__ = ["EMAHook", "ModelEMA"]
