"""Five hook stages, enough for logging, checkpointing, evaluation and EMA.

``before_train``, ``before_step``, ``after_backward``, ``after_step``, ``after_train``. A hook reads and
writes ``trainer.state``; at the last step of an epoch ``state.end_of_epoch`` is true, which is where
evaluation and checkpointing happen. Hooks run in the order they are given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from unified.engine.trainer import Trainer


class Hook:
    """Base class; override the stages you need."""

    def before_train(self, trainer: Trainer) -> None: ...

    def before_step(self, trainer: Trainer) -> None: ...

    def after_backward(self, trainer: Trainer) -> None: ...

    def after_step(self, trainer: Trainer) -> None: ...

    def after_train(self, trainer: Trainer) -> None: ...
