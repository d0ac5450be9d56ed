"""What ``--resume`` continues from, and the checks that it continues the same run.

A run is resumed from its own folder only (``RUN/weights/last.pt`` beside ``RUN/config.yaml``): it writes
there. It is rebuilt from what its checkpoint stores, never from the files on disk now: the model from
the stored ``model_config`` (an edited model YAML is ignored, with a note), the heads from the stored
``dataset_info``, and a dataset on disk that no longer has the same classes, image labels or identities
is an error naming the difference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from unified.checkpoint import CheckpointError, load_safe, require_format
from unified.config import ConfigError, load_config, parse_override, to_dict
from unified.models.config import load_model_config
from unified.structures import DatasetInfo

if TYPE_CHECKING:
    from unified.engine.experiment import ExperimentConfig
    from unified.engine.trainer import Trainer

#: What a resumed run reads from its checkpoint besides the trainer's own state.
RESUME_KEYS = ("experiment", "model_config", "dataset_info", "model", "epoch")
#: The keys a resume may change: more (or fewer) epochs, where it runs. Anything else would make the
#: resumed run another experiment than the one its checkpoint holds.
RESUMABLE_KEYS = ("train.epochs", "train.device", "train.workers")
#: The fields of DatasetInfo a run's model and labels depend on, with the words a message uses.
_DATASET_FIELDS = {
    "class_names": "classes",
    "image_label_names": "image labels",
    "num_identities": "identities",
    "label_kinds": "label kinds",
    "kind_options": "kind options",
}


def resume_run_dir(checkpoint: Path) -> Path:
    """The run folder of ``checkpoint``: ``RUN`` for ``RUN/weights/NAME.pt`` beside ``RUN/config.yaml``.

    Raises:
        ConfigError: for a checkpoint anywhere else: a resumed run writes its config, logs and weights into
            the checkpoint's grandparent, which for a loose file is someone's own folder.
    """
    run_dir = checkpoint.parent.parent
    if checkpoint.parent.name != "weights" or not (run_dir / "config.yaml").is_file():
        raise ConfigError(
            f"--resume {checkpoint}: not a checkpoint of a run folder (RUN/weights/last.pt beside "
            "RUN/config.yaml); a resumed run writes into its run folder, so only a run can be resumed. To train "
            f"on from these weights, start a new run with --weights {checkpoint} (fine-tuning: a new schedule)"
        )
    return run_dir


def find_resume_checkpoint(resume: str, project: str) -> Path:
    """A run folder, a checkpoint in a run folder's ``weights/``, or ``""`` (the newest run under ``project``).

    Whether a file given by name lies in a run folder is checked when the run starts
    (:func:`resume_run_dir`), after the file has been read safely.

    Raises:
        FileNotFoundError: when there is no checkpoint to resume.
    """
    if not resume:
        candidates = [
            p for p in Path(project).glob("**/weights/last.pt") if (p.parent.parent / "config.yaml").is_file()
        ]
        if not candidates:
            raise FileNotFoundError(f"--resume: no run with weights/last.pt under {project}")
        return max(candidates, key=lambda p: p.stat().st_mtime)
    path = Path(resume)
    if path.is_dir():
        path = path / "weights" / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"--resume {resume}: no checkpoint at {path}")
    return path


def load_resume_state(path: Path, device: torch.device) -> dict[str, Any]:
    """The checkpoint a run resumes from, checked to hold what a resume reads.

    Raises:
        CheckpointError: for a file that is not a complete unified checkpoint.
    """
    state = load_safe(path, map_location=device)
    require_format(state, path)
    if state.get("stripped"):
        raise CheckpointError(
            f"--resume {path}: a stripped checkpoint (unified export --strip) keeps the weights only, no "
            f"optimiser or training state to resume; to train on from it, start a new run with --weights {path}"
        )
    require_format(state, path, keys=RESUME_KEYS)
    if not isinstance(state["model_config"], Mapping) or not isinstance(state["dataset_info"], Mapping):
        raise CheckpointError(
            f"{path}: 'model_config' and 'dataset_info' must be mappings; it cannot be resumed"
        )
    return state


def stored_dataset_info(state: Mapping[str, Any], path: Path) -> DatasetInfo:
    """The :class:`DatasetInfo` a checkpoint's model was built for.

    Raises:
        CheckpointError: when the stored entry does not make one.
    """
    data = dict(state["dataset_info"])
    data["label_kinds"] = tuple(data.get("label_kinds", ("boxes",)))
    try:
        return DatasetInfo(**data)
    except TypeError as exc:
        raise CheckpointError(
            f"{path}: its 'dataset_info' is not valid ({exc}); it cannot be resumed"
        ) from None


def check_same_dataset(stored: DatasetInfo, found: DatasetInfo, data: str, checkpoint: Path) -> None:
    """A resumed run must see the dataset it was trained on: same classes, image labels, identities, kinds.

    Class ids, image-label columns and identity classes are positions in the heads: a reordered or changed
    list would resume "successfully" while teaching every head the wrong meaning.

    Raises:
        ConfigError: naming each difference, and what to do instead.
    """
    changes = [
        f"{label}: {_difference(getattr(stored, name), getattr(found, name), name)}"
        for name, label in _DATASET_FIELDS.items()
        if _comparable(getattr(stored, name), name) != _comparable(getattr(found, name), name)
    ]
    if changes:
        raise ConfigError(
            f"key 'data': {data} is not the dataset {checkpoint} was trained on ({'; '.join(changes)}); resume "
            f"with the original data, or fine-tune on this one in a new run with --weights {checkpoint}"
        )


def _comparable(value: Any, name: str) -> Any:
    return sorted(value) if name == "label_kinds" else value  # which kinds, not in which part they came


def _difference(before: Any, after: Any, name: str) -> str:
    """Where two values differ, briefly: lists by length or first differing position."""
    if name == "label_kinds":
        return f"{sorted(before)} -> {sorted(after)}"
    if isinstance(before, list) and isinstance(after, list):
        if len(before) != len(after):
            return f"{len(before)} names -> {len(after)} ({before[:6]} -> {after[:6]})"
        index = next((i for i, (a, b) in enumerate(zip(before, after)) if a != b), 0)
        return f"position {index} was {before[index]!r}, now {after[index]!r}"
    return f"{before!r} -> {after!r}"


def model_file_note(model: Any, stored: Mapping[str, Any]) -> str | None:
    """A note when the model YAML a run was started from now describes another architecture.

    The resumed run keeps the stored one; the note says so, since the user may expect the edit to count.
    """
    if not isinstance(model, str) or not model:
        return None
    try:
        current: Any = {**to_dict(load_model_config(model)), "nc": stored.get("nc")}
    except (ConfigError, OSError):
        current = None
    if current == dict(stored):
        return None
    return (
        f"note: {model} now differs from (or no longer reads as) the architecture this run was started with; "
        "the run continues with the architecture stored in its checkpoint. Train the edited model in a new run."
    )


def apply_resume_changes(
    cfg: ExperimentConfig, changes: Sequence[tuple[str, str | None]]
) -> ExperimentConfig:
    """The stored experiment with the changes a resume can take (:data:`RESUMABLE_KEYS`).

    Args:
        cfg: The experiment stored in the checkpoint.
        changes: ``(what the user typed, key=value override)`` pairs, e.g. ``("--epochs 60",
            "train.epochs=60")``; an override of None is a flag that a resume never takes.

    Raises:
        ConfigError: one line naming every change a resume cannot apply, or a value that is not valid.
    """
    refused = [
        given for given, override in changes if override is None or _key(override) not in RESUMABLE_KEYS
    ]
    if refused:
        raise ConfigError(
            f"--resume continues a run as it was configured: {', '.join(refused)} cannot change on a resume "
            f"(it can take {', '.join(RESUMABLE_KEYS)}; --epochs, --device, --workers). Start a new run with "
            "--weights RUN/weights/last.pt to train on with other settings"
        )
    overrides = [override for _, override in changes if override is not None]
    return load_config(type(cfg), data=to_dict(cfg), overrides=overrides) if overrides else cfg


def _key(override: str) -> str:
    return parse_override(override)[0]


def finished_note(cfg: ExperimentConfig, state: Mapping[str, Any], run_dir: Path) -> str | None:
    """What to tell the user when the run a checkpoint holds has nothing left to train; None otherwise.

    A run has finished when it has done all the epochs of its schedule (a time budget may have shortened
    it). ``cfg.train.epochs`` other than the stored ones extends (or shortens) the schedule instead.

    Raises:
        ConfigError: for changed ``train.epochs`` not above the epochs already done.
    """
    done = int(state["epoch"])
    stored = int(state["experiment"]["train"]["epochs"])
    if cfg.train.epochs != stored:
        if cfg.train.epochs <= done:
            raise ConfigError(
                f"key 'train.epochs': {run_dir} has already trained {done} epochs; to train longer, resume with "
                f"more than {done} (--epochs N)"
            )
        return None
    if done < int(state.get("schedule", {}).get("planned_epochs") or stored):
        return None
    return (
        f"{run_dir} has finished: it trained all {done} epochs of its schedule, so there is nothing to resume "
        f"(its results are in {run_dir / 'metrics.json'}). To train it longer: --resume {run_dir} --epochs N "
        f"with N above {done}"
    )


def restore(trainer: Trainer, state: Mapping[str, Any], path: Path) -> None:
    """Load a checkpoint into the trainer; a state that does not fit is a one-line CheckpointError.

    When the run's config asks for other epochs than the checkpoint's schedule spans, the schedule is
    extended from the resume epoch (:meth:`~unified.engine.optim.Schedule.extend`).
    """
    try:
        trainer.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
        detail = " ".join(str(exc).split())  # load_state_dict's size-mismatch report spans many lines
        raise CheckpointError(f"{path} cannot be resumed: {detail[:400]}") from None
    schedule = trainer.schedule
    # A checkpoint from before schedules stored their epochs: its experiment's are the schedule's.
    schedule.configured_epochs = int(
        state.get("schedule", {}).get("epochs", state["experiment"]["train"]["epochs"])
    )
    if trainer.cfg.train.epochs != schedule.configured_epochs:
        schedule.extend(trainer.cfg.train.epochs, trainer.state.epoch)
        if trainer.dist.is_main:
            print(_extension_note(trainer))


def _extension_note(trainer: Trainer) -> str:
    o, schedule = trainer.cfg.optim, trainer.schedule
    start, end = schedule.extended_from * o.lr0, schedule.lr_factor(schedule.epochs) * o.lr0
    rate = (
        f"stays at {end:.3g}"
        if abs(start - end) <= 1e-12 * o.lr0
        else f"decays from {start:.3g} to {end:.3g}"
    )
    return f"the schedule now ends after epoch {schedule.epochs}: from epoch {trainer.state.epoch + 1} the learning rate {rate}"


__all__ = [
    "RESUMABLE_KEYS",
    "RESUME_KEYS",
    "apply_resume_changes",
    "check_same_dataset",
    "find_resume_checkpoint",
    "finished_note",
    "load_resume_state",
    "model_file_note",
    "restore",
    "resume_run_dir",
    "stored_dataset_info",
]
