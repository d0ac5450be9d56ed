"""MOTChallenge sequences (``format: mot``): MOT15, MOT16/17 and MOT20 ``gt.txt`` and ``det.txt``.

A split location is a sequence folder or a folder of them. A sequence folder holds ``img1/000001.jpg`` ...
and ``gt/gt.txt`` (or ``det/det.txt``), and ``seqinfo.ini`` when the benchmark ships one (``[Sequence]``
``seqLength``, ``imWidth``, ``imHeight``, ``imDir``, ``imExt``, ``frameRate``; MOT15 has none: then the
frames are the images found in ``img1/`` and their sizes are read from the files).

Rows are ``frame,id,x,y,w,h,conf,...`` in pixels (boxes are amodal: overshoot of the border is clipped):

- MOT16, MOT17, MOT20 ``gt.txt``: ``frame,id,x,y,w,h,considered,class,visibility`` (9 columns);
- MOT15 ``gt.txt``: ``frame,id,x,y,w,h,considered,wx,wy,wz`` (10 columns, world coordinates, ``-1`` where
  the later generations have the class): every row is a pedestrian;
- ``det.txt`` of every generation: ``frame,-1,x,y,w,h,score[,...]``: detections without identities.

The published rules (the MOT16 paper; TrackEval's MOTChallenge evaluation), applied with ``classes:
motchallenge``: class 1 (pedestrian) with the consider flag set is an object; the distractor classes 2
(person on a vehicle), 7 (static person), 8 (distractor) and 12 (reflection), and for MOT20 also 6
(non-motorised vehicle), are regions where a detection is neither right nor wrong: ignore regions; the other
classes (vehicles, occluders, crowd) and pedestrians whose consider flag is 0 are not evaluated and are left
out. A pedestrian less visible than the part's ``min_visibility`` becomes an ignore region too. Every
sequence's counts of each verdict (``kept``, ``distractor``, ``low_visibility``, ``not_considered``,
``other_class``, ``low_score``) go to the load summary.

With ``classes: indices`` (our synthetic world, a tracking set of one's own) the class column is 1-based
into the dataset's ``names``; ``auto`` (the default) is ``motchallenge`` for a dataset of one class and
``indices`` otherwise. Problems (a bad row, a frame out of range, an id twice in a frame) name ``file:line``;
rows the rules leave out are not checked further.
"""

from __future__ import annotations

import configparser
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from unified.config import check
from unified.data.formats import FORMATS, DatasetFormat, PartContext, SplitLocation, class_named, single_class
from unified.data.readers import IMAGE_SUFFIXES, IdentityMap, Instance, make_record, read_lines, row_numbers
from unified.data.records import ImageRecord
from unified.data.summary import PartTally
from unified.data.validate import ProblemLog, check_box, check_image, is_integer_value

#: The MOT16/17/20 classes (the class column of ``gt.txt``).
MOT_CLASSES = {
    1: "pedestrian",
    2: "person_on_vehicle",
    3: "car",
    4: "bicycle",
    5: "motorbike",
    6: "non_mot_vehicle",
    7: "static_person",
    8: "distractor",
    9: "occluder",
    10: "occluder_on_ground",
    11: "occluder_full",
    12: "reflection",
    13: "crowd",
}
PEDESTRIAN = 1
#: Classes whose boxes are ignore regions (TrackEval removes detections matched to them).
DISTRACTORS = frozenset({2, 7, 8, 12})
MOT20_DISTRACTORS = DISTRACTORS | {6}
#: Verdicts whose rows are left out (counted); ``kept`` rows are objects, the rest ignore regions.
LEFT_OUT = frozenset({"not_considered", "other_class", "low_score"})
IGNORED = frozenset({"distractor", "low_visibility"})


@dataclass
class MotOptions:
    """Options of a ``mot`` part."""

    #: ``gt``: ``gt/gt.txt``; ``det``: the public detections ``det/det.txt`` (boxes without identities).
    labels: Literal["gt", "det"] = "gt"
    #: ``motchallenge``: the published class rules; ``indices``: the class column is 1-based into ``names``;
    #: ``auto``: ``motchallenge`` for a one-class dataset, else ``indices``.
    classes: Literal["auto", "motchallenge", "indices"] = "auto"
    #: ``auto``: MOT15 for a 10-column ``gt.txt``, MOT20 for a sequence named ``MOT20-*``, else MOT16/17.
    generation: Literal["auto", "mot15", "mot16", "mot17", "mot20"] = "auto"
    #: The dataset class pedestrians become (``motchallenge`` rules, ``det``); default the first class.
    class_name: str | None = None
    #: Pedestrians less visible than this (the visibility column, 0..1) become ignore regions.
    min_visibility: float = 0.0
    #: ``det``: detections scoring below this are left out.
    min_score: float | None = None

    def __post_init__(self) -> None:
        check(0.0 <= self.min_visibility <= 1.0, "min_visibility", "must be in 0..1 (a fraction of the box)")


@dataclass
class SeqInfo:
    """A sequence's facts: from ``seqinfo.ini``, or found in ``img1/`` when it has none (MOT15)."""

    name: str
    im_dir: str = "img1"
    length: int = 0
    size: tuple[int, int] | None = None
    ext: str = ".jpg"
    frame_rate: float | None = None
    frames: dict[int, Path] = field(default_factory=dict)


@dataclass
class MotRow:
    """One parsed row: MOT class ``cls`` (-1: none), consider flag or score ``conf``, ``visibility``."""

    frame: float
    raw_id: float
    box: tuple[float, float, float, float]
    cls: int
    conf: float
    visibility: float | None
    where: str
    fields: list[str]


@dataclass(frozen=True)
class MotRules:
    """How one sequence's rows are judged."""

    classes: Literal["motchallenge", "indices", "none"]
    detections: bool
    target: int
    nc: int
    distractors: frozenset[int]
    min_visibility: float
    min_score: float | None

    def check_class(self, row: MotRow, log: ProblemLog) -> bool:
        """Whether the row's class is one the rules know (else an ``unknown_class`` problem)."""
        if self.classes == "none" or row.cls == -1 or (self.classes == "indices" and row.conf == 0):
            return True  # a row not considered is not checked further
        top = len(MOT_CLASSES) if self.classes == "motchallenge" else self.nc
        if 1 <= row.cls <= top:
            return True
        table = "a MOTChallenge class" if self.classes == "motchallenge" else "1-based into names"
        log.add("unknown_class", row.where, f"class {row.fields[7]} is not in 1..{top} ({table})")
        return False

    def verdict(self, row: MotRow) -> tuple[str, int]:
        """The row's verdict and the class index its box gets."""
        if self.detections:
            low = self.min_score is not None and row.conf < self.min_score
            return ("low_score" if low else "kept"), self.target
        index = self.target
        if self.classes == "motchallenge" and row.cls not in (-1, PEDESTRIAN):
            return ("distractor" if row.cls in self.distractors else "other_class"), index
        if self.classes == "indices" and row.cls != -1:
            index = row.cls - 1
        if row.conf == 0:
            return "not_considered", index
        if row.visibility is not None and row.visibility < self.min_visibility:
            return "low_visibility", index
        return "kept", index


# ---------------------------------------------------------------------------------------- sequences


def is_sequence(folder: Path) -> bool:
    """A MOTChallenge sequence folder: ``seqinfo.ini``, or ``img1/`` beside ``gt/`` or ``det/`` (MOT15)."""
    if (folder / "seqinfo.ini").is_file():
        return True
    return (folder / "img1").is_dir() and ((folder / "gt").is_dir() or (folder / "det").is_dir())


def find_sequences(root: Path) -> list[Path]:
    """MOTChallenge sequence folders: ``root`` itself if it is one, else its children that are."""
    root = Path(root)
    if is_sequence(root):
        return [root]
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and is_sequence(p))


def read_seqinfo(seq_dir: Path, log: ProblemLog) -> SeqInfo | None:
    """The sequence's facts from ``seqinfo.ini`` when it has one, else from the images in ``img1/``."""
    ini = Path(seq_dir) / "seqinfo.ini"
    if not ini.is_file():
        return _found_seqinfo(Path(seq_dir))
    parser = configparser.ConfigParser()
    try:
        parser.read_string(ini.read_text())
        section = parser["Sequence"]
        info = SeqInfo(
            name=section.get("name", Path(seq_dir).name),
            im_dir=section.get("imDir", "img1"),
            length=int(section["seqLength"]),
            size=(int(section["imWidth"]), int(section["imHeight"])),
            ext=section.get("imExt", ".jpg"),
            frame_rate=float(section.get("frameRate", "30")),
        )
    except (OSError, configparser.Error, KeyError, ValueError) as exc:
        log.add(
            "bad_file",
            str(ini),
            f"cannot read seqinfo.ini (needs [Sequence] seqLength, imWidth, imHeight): {exc!r}",
            skips="image",
        )
        return None
    info.frames = {f: seq_dir / info.im_dir / f"{f:06d}{info.ext}" for f in range(1, info.length + 1)}
    return info


def _found_seqinfo(seq_dir: Path) -> SeqInfo:
    """A sequence without ``seqinfo.ini``: its frames are the images ``img1/NNNNNN.*``."""
    frames = {
        int(p.stem): p
        for p in sorted((seq_dir / "img1").iterdir())
        if p.suffix.lower() in IMAGE_SUFFIXES and p.stem.isdigit() and int(p.stem) > 0
    }
    length = max(frames, default=0)
    ext = next(iter(frames.values())).suffix if frames else ".jpg"
    return SeqInfo(name=seq_dir.name, length=length, ext=ext, frames=dict(sorted(frames.items())))


# --------------------------------------------------------------------------------------------- rows


def parse_rows(
    path: Path, log: ProblemLog, *, detections: bool, mot15: bool | None
) -> tuple[list[MotRow], int] | None:
    """The numeric rows of a ``gt.txt`` or ``det.txt`` and its column count (None: unreadable).

    Args:
        path: The file.
        log: Where problems go (a row with too few columns, or not numbers).
        detections: A ``det.txt`` (no class, no visibility; ``conf`` is the score).
        mot15: Columns 8-10 are MOT15's world coordinates, not class and visibility (None: when the file
            has 10 columns).
    """
    lines = read_lines(path, log, path.name)
    if lines is None:
        return None
    rows: list[MotRow] = []
    columns: int | None = None
    for number, line in enumerate(lines, start=1):
        where = f"{path}:{number}"
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 6:
            log.add(
                "bad_row", where, f"{len(fields)} columns; rows need frame,id,x,y,w,h[,conf,class,visibility]"
            )
            continue
        columns = len(fields) if columns is None else columns
        if len(fields) != columns:
            log.add("bad_row", where, f"{len(fields)} columns where the file's first row has {columns}")
            continue
        values = row_numbers(fields, line, where, log)
        if values is None:
            continue
        world = mot15 if mot15 is not None else columns == 10
        rows.append(_row(values, fields, where, with_class=not detections and not world))
    return rows, columns or 0


def _row(values: list[float], fields: list[str], where: str, *, with_class: bool) -> MotRow:
    cls = values[7] if with_class and len(values) >= 8 else -1.0
    visibility = values[8] if with_class and len(values) >= 9 else None
    return MotRow(
        frame=values[0],
        raw_id=values[1],
        box=(values[2], values[3], values[4], values[5]),
        cls=int(cls) if is_integer_value(cls) else 10**6,  # a fractional class is unknown
        conf=values[6] if len(values) >= 7 else 1.0,
        visibility=visibility,
        where=where,
        fields=fields,
    )


def _valid(
    row: MotRow, length: int, detections: bool, seen: dict[tuple[int, int], int], log: ProblemLog
) -> bool:
    """Frame in range, identity an integer (``>= 0`` in ground truth) and once per frame, box finite."""
    if not is_integer_value(row.frame) or not 1 <= row.frame <= length:
        log.add("frame_out_of_range", row.where, f"frame {row.fields[0]} is not in 1..{length} (seqLength)")
        return False
    if not is_integer_value(row.raw_id) or (row.raw_id < 0 and not detections):
        log.add("invalid_identity", row.where, f"id {row.fields[1]} is not an integer >= 0")
        return False
    if not all(math.isfinite(v) for v in row.box):
        log.add("box_not_finite", row.where, f"box {row.fields[2:6]} has a NaN or infinite value")
        return False
    key = (int(row.frame), int(row.raw_id))
    if key[1] >= 0 and key in seen:
        log.add(
            "invalid_identity",
            row.where,
            f"id {key[1]} appears twice in frame {key[0]} (first at line {seen[key]})",
        )
        return False
    seen[key] = int(row.where.rsplit(":", 1)[1])
    return True


# ---------------------------------------------------------------------------------------------- read


@dataclass
class _Reading:
    """What every sequence of one location is read with."""

    class_names: Sequence[str]
    label_kinds: Sequence[str]
    log: ProblemLog
    part: str
    identities: IdentityMap
    check_images: bool
    options: MotOptions
    tally: PartTally


def read_mot(
    root: Path,
    class_names: Sequence[str],
    label_kinds: Sequence[str],
    log: ProblemLog,
    *,
    part: str = "",
    identities: IdentityMap | None = None,
    check_images: bool = True,
    options: MotOptions | None = None,
    tally: PartTally | None = None,
) -> list[ImageRecord]:
    """Read MOTChallenge sequences under ``root`` (one sequence folder or a folder of them).

    Returns:
        One record per frame with a valid image, sequences in name order, frames in order.
    """
    reading = _Reading(
        class_names,
        label_kinds,
        log,
        part,
        identities if identities is not None else IdentityMap(),
        check_images,
        options or MotOptions(),
        tally if tally is not None else PartTally(),
    )
    sequences = find_sequences(root)
    if not sequences:
        log.add(
            "bad_file", str(root), "no MOTChallenge sequence (seqinfo.ini, or img1/ with gt/) here", "image"
        )
        return []
    records: list[ImageRecord] = []
    for seq_dir in sequences:
        records.extend(_read_sequence(seq_dir, reading))
    return records


def _frames(seq_dir: Path, info: SeqInfo, reading: _Reading) -> dict[int, tuple[Path, tuple[int, int]]]:
    """The frames whose image is readable, with their sizes."""
    frames: dict[int, tuple[Path, tuple[int, int]]] = {}
    for frame, path in info.frames.items():
        where = f"{seq_dir / 'seqinfo.ini'}: frame {frame}" if info.size else f"{seq_dir}: frame {frame}"
        if reading.check_images or info.size is None:
            size = check_image(path, where, reading.log, info.size)
        else:
            size = info.size
        if size is not None:
            frames[frame] = (path, size)
    return frames


def _read_sequence(seq_dir: Path, reading: _Reading) -> list[ImageRecord]:
    info = read_seqinfo(seq_dir, reading.log)
    if info is None:
        return []
    frames = _frames(seq_dir, info, reading)
    rows: dict[int, list[Instance]] = defaultdict(list)
    if "boxes" in reading.label_kinds:
        found = _instances(seq_dir, info, frames, reading)
        if found is None:
            return []  # no readable labels: the sequence's labels are unknown
        rows = found
    return [
        make_record(
            path,
            size,
            rows.get(frame, []),
            reading.label_kinds,
            reading.tally,
            part=reading.part,
            sequence=info.name,
            frame=frame,
        )  # fmt: skip
        for frame, (path, size) in frames.items()
    ]


def _rules(info: SeqInfo, columns: int, reading: _Reading) -> MotRules:
    options = reading.options
    detections = options.labels == "det"
    mot15 = options.generation == "mot15" or (options.generation == "auto" and columns == 10)
    classes = options.classes
    if classes == "auto":
        classes = "motchallenge" if len(reading.class_names) == 1 else "indices"
    mot20 = options.generation == "mot20" or (
        options.generation == "auto" and info.name.upper().startswith("MOT20")
    )
    return MotRules(
        classes="none" if detections or mot15 else classes,
        detections=detections,
        target=single_class(reading.class_names, options.class_name),
        nc=len(reading.class_names),
        distractors=MOT20_DISTRACTORS if mot20 else DISTRACTORS,
        min_visibility=options.min_visibility,
        min_score=options.min_score,
    )


def _instances(
    seq_dir: Path, info: SeqInfo, frames: dict[int, tuple[Path, tuple[int, int]]], reading: _Reading
) -> dict[int, list[Instance]] | None:
    """The sequence's instances by frame (None: its label file is missing or unreadable)."""
    detections = reading.options.labels == "det"
    path = seq_dir / ("det/det.txt" if detections else "gt/gt.txt")
    if not path.is_file():
        reading.log.add(
            "bad_file",
            str(path),
            f"the part reads {reading.options.labels} but the sequence has no {path.name}",
            "image",
        )
        return None
    mot15 = {"mot15": True, "auto": None}.get(reading.options.generation, False)
    parsed = parse_rows(path, reading.log, detections=detections, mot15=mot15)
    if parsed is None:
        return None
    rows, columns = parsed
    rules = _rules(info, columns, reading)
    counts = reading.tally.sequence(info.name)
    seen: dict[tuple[int, int], int] = {}
    found: dict[int, list[Instance]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: (r.frame, r.raw_id)):
        instance = _instance(row, rules, info, frames, seen, reading, counts)
        if instance is not None:
            found[int(row.frame)].append(instance)
    return found


def _instance(
    row: MotRow,
    rules: MotRules,
    info: SeqInfo,
    frames: dict[int, tuple[Path, tuple[int, int]]],
    seen: dict[tuple[int, int], int],
    reading: _Reading,
    counts: Counter[str],
) -> Instance | None:
    """One row judged by the rules: an object, an ignore region, or None (left out, counted, or a problem)."""
    if not rules.check_class(row, reading.log):
        return None
    verdict, index = rules.verdict(row)
    if verdict in LEFT_OUT:
        counts[verdict] += 1
        reading.tally.drop(verdict)
        return None
    if not _valid(row, info.length, rules.detections, seen, reading.log) or int(row.frame) not in frames:
        return None  # a problem, or its image is missing or corrupt (already reported)
    width, height = frames[int(row.frame)][1]
    x, y, w, h = row.box
    box = check_box((x, y, x + w, y + h), width, height, row.where, reading.log, clip_outside=True)
    if box is None:
        return None
    counts[verdict] += 1
    if verdict in IGNORED:
        return Instance(box, index, -1, ignore=True)
    identity = -1
    if "identities" in reading.label_kinds and row.raw_id >= 0:
        identity = reading.identities.lookup(f"{reading.part}/{info.name}", int(row.raw_id))
    return Instance(box, index, identity)


@FORMATS.register("mot")
class MotFormat(DatasetFormat):
    """MOTChallenge sequences (``seqinfo.ini``, ``img1/``, ``gt/gt.txt`` or ``det/det.txt``)."""

    name = "mot"
    provides = ("boxes", "identities", "ignore")
    options_class = MotOptions

    def check_options(self, options: MotOptions, class_names: Sequence[str]) -> tuple[str, str] | None:
        return class_named(options.class_name, class_names, "options.class_name")

    def read(self, location: SplitLocation, ctx: PartContext) -> list[ImageRecord]:
        records: list[ImageRecord] = []
        for source in ctx.resolve_all(location):
            records.extend(
                read_mot(
                    source,
                    ctx.class_names,
                    ctx.label_kinds,
                    ctx.log,
                    part=ctx.part,
                    identities=ctx.identities,
                    check_images=ctx.check_images,
                    options=ctx.options,
                    tally=ctx.tally,
                )
            )
        return records


__all__ = [
    "DISTRACTORS",
    "MOT20_DISTRACTORS",
    "MOT_CLASSES",
    "MotFormat",
    "MotOptions",
    "MotRules",
    "SeqInfo",
    "find_sequences",
    "parse_rows",
    "read_mot",
    "read_seqinfo",
]
