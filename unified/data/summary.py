"""What a dataset load found, per part and split: images, boxes, identities, tags, ignore regions and what the
published rules of a format left out.

Readers count what they leave out on purpose (a COCO category that is not among the dataset's ``names``, a
MOTChallenge row that is not considered, an ignore region of a part that does not list ``ignore``) in the
part's :class:`PartTally`; those are no problems (nothing is wrong with the data), but they are never dropped
silently either: :func:`summarise` puts them beside the counts of what was read, and training prints the
summary and writes it to ``RUN/dataset_summary.json``.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from unified.data.records import ImageRecord

#: The file training writes into its run folder.
SUMMARY_FILE = "dataset_summary.json"


@dataclass
class PartTally:
    """What a format left out of one part's split, by reason, and its per-sequence counts (MOTChallenge).

    Attributes:
        dropped: Items left out by the format's published rules, by reason (``other_category``,
            ``not_considered``, ``ignore_region`` ...).
        details: For a reason, counts by what was left out (the category names of ``other_category``).
        sequences: Per video sequence, the counts of its rows by verdict (``kept``, ``distractor`` ...).
    """

    dropped: Counter[str] = field(default_factory=Counter)
    details: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    sequences: dict[str, Counter[str]] = field(default_factory=dict)

    def drop(self, reason: str, detail: str | None = None, count: int = 1) -> None:
        """Count ``count`` items left out for ``reason`` (``detail``: e.g. the category's name)."""
        if count <= 0:
            return
        self.dropped[reason] += count
        if detail is not None:
            self.details[reason][detail] += count

    def sequence(self, name: str) -> Counter[str]:
        """The counts of sequence ``name`` (created empty on first use)."""
        return self.sequences.setdefault(name, Counter())


@dataclass
class PartSummary:
    """One part's split as loaded.

    Attributes:
        part: The part's name.
        split: ``train``, ``val`` or ``test``.
        format: The part's format.
        images: Images read.
        boxes: Boxes that are objects (ignore regions not counted).
        ignored: Ignore regions kept (the part lists ``ignore``).
        identities: Distinct identities among the boxes.
        tags: Image labels over all images (an image with three tags counts three).
        dropped: What the format's rules left out, by reason (see :class:`PartTally`).
        details: Per reason, what was left out by name.
        sequences: Per video sequence, its rows by verdict.
        share: Fraction of the training samples drawn from this part (training split only).
    """

    part: str
    split: str
    format: str
    images: int = 0
    boxes: int = 0
    ignored: int = 0
    identities: int = 0
    tags: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    details: dict[str, dict[str, int]] = field(default_factory=dict)
    sequences: dict[str, dict[str, int]] = field(default_factory=dict)
    share: float | None = None


def summarise(
    part: str, split: str, fmt: str, records: Sequence[ImageRecord], tally: PartTally
) -> PartSummary:
    """The summary of one part's split from its records and what its format left out."""
    summary = PartSummary(part, split, fmt, images=len(records))
    identities: set[int] = set()
    for record in records:
        boxes = record.labels.get("boxes")
        flags = record.labels.get("ignore")
        count = len(boxes) if boxes is not None else 0
        ignored = int(np.count_nonzero(flags)) if flags is not None else 0
        summary.boxes += count - ignored
        summary.ignored += ignored
        ids = record.labels.get("identities")
        if ids is not None:
            identities.update(int(i) for i in np.asarray(ids) if i >= 0)
        tags = record.labels.get("image_labels")
        summary.tags += len(tags) if tags is not None else 0
    summary.identities = len(identities)
    summary.dropped = dict(sorted(tally.dropped.items()))
    summary.details = {k: dict(sorted(v.items())) for k, v in sorted(tally.details.items()) if v}
    summary.sequences = {k: dict(v) for k, v in tally.sequences.items()}
    return summary


def format_summary(summaries: Sequence[PartSummary]) -> str:
    """The summary as text: one line per part and split, then one per video sequence."""
    lines = ["dataset:"]
    for s in summaries:
        share = f", {s.share:.0%} of the samples" if s.share is not None else ""
        line = (
            f"  {s.split} {s.part} ({s.format}): {s.images} images, {s.boxes} boxes, {s.ignored} ignore regions, "
            f"{s.identities} identities, {s.tags} tags{share}"
        )
        if s.dropped:
            line += "; left out: " + ", ".join(f"{n} {reason}" for reason, n in s.dropped.items())
        lines.append(line)
        for name, counts in s.sequences.items():
            lines.append(f"    {name}: " + ", ".join(f"{n} {verdict}" for verdict, n in counts.items()))
    return "\n".join(lines)


def summary_json(summaries: Sequence[PartSummary]) -> dict[str, list[dict[str, Any]]]:
    """The summary as JSON data: a list of parts per split."""
    found: dict[str, list[dict[str, Any]]] = {}
    for s in summaries:
        found.setdefault(s.split, []).append(asdict(s))
    return found


def summary_text(summaries: Sequence[PartSummary]) -> str:
    """The text of ``dataset_summary.json``."""
    return json.dumps(summary_json(summaries), indent=2) + "\n"


__all__ = [
    "PartSummary",
    "PartTally",
    "SUMMARY_FILE",
    "format_summary",
    "summarise",
    "summary_json",
    "summary_text",
]
