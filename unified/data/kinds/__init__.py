"""Kinds of label: the registry and the built-in kinds (``boxes``, ``identities``, ``image_labels``).

See :mod:`unified.data.kinds.base` for the contract a kind fulfils.
"""

from unified.data.kinds.base import (
    INVALID,
    LABEL_KINDS,
    RESERVED_NAMES,
    LabelKind,
    PieceOutcome,
    kind_order,
    label_kind,
    move_to,
)

__all__ = [
    "INVALID",
    "LABEL_KINDS",
    "LabelKind",
    "PieceOutcome",
    "RESERVED_NAMES",
    "kind_order",
    "label_kind",
    "move_to",
]
