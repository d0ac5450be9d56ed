"""Seven hook stages, enough for logging, checkpointing, evaluation, EMA and the time budget.

``before_train``, ``before_epoch``, ``before_step``, ``after_backward``, ``after_step``, ``after_epoch``,
``after_train``. A hook reads and writes ``trainer.state``; ``after_epoch`` runs once an epoch's last step
is done (skipped or not), which is where evaluation and checkpointing happen. Hooks run in the order they
are given. A hook with state that a resumed run needs sets ``state_key`` and implements
``state_dict``/``load_state_dict``: the trainer saves that state in every checkpoint under the key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from unified.engine.trainer import Trainer


class Hook:
    """Base class; override the stages you need."""

    #: Key of this hook's state in a checkpoint; None: the hook keeps nothing across a resume.
    state_key: ClassVar[str | None] = None

    def before_train(self, trainer: Trainer) -> None: ...

    def before_epoch(self, trainer: Trainer) -> None: ...

    def before_step(self, trainer: Trainer) -> None: ...

    def after_backward(self, trainer: Trainer) -> None: ...

    def after_step(self, trainer: Trainer) -> None: ...

    def after_epoch(self, trainer: Trainer) -> None: ...

    def after_train(self, trainer: Trainer) -> None: ...

    def state_dict(self) -> Any:
        """What a resumed run needs (tensors and plain data), saved under ``state_key``."""
        return None

    def load_state_dict(self, state: Any) -> None:
        """Take back what :meth:`state_dict` returned (None when the checkpoint has no entry)."""
