"""Kinds of label: the registry and the built-in kinds (``boxes``, ``identities``, ``ignore``, ``image_labels``).

See :mod:`unified.data.kinds.base` for the contract a kind fulfils.
"""

from unified.data.kinds.base import (
    INSTANCE_KIND,
    INVALID,
    LABEL_KINDS,
    RESERVED_NAMES,
    LabelKind,
    PieceOutcome,
    count_instances,
    kind_order,
    label_kind,
    move_to,
)

__all__ = [
    "INSTANCE_KIND",
    "INVALID",
    "LABEL_KINDS",
    "LabelKind",
    "PieceOutcome",
    "RESERVED_NAMES",
    "count_instances",
    "kind_order",
    "label_kind",
    "move_to",
]
