"""Named ablation studies: each a list of variants of one base experiment, written as config overrides.

A variant is a list of ``key.sub=value`` overrides, the syntax of the command line: experiment keys
(``tasks=[detect, jdc]``, ``task_options.jdc.implicit=false``, ``implicit.sharing=latent``) and, under the
``model.`` prefix, keys of the model YAML (``model.head.refine=[add, mul]``), which patch the packaged model
the experiment names. Each variant is compared with a reference variant (the study's ``baseline`` unless the
variant names its own), paired by seed.

The studies here are data, not code paths: :data:`STUDIES` is a registry, and a project or a test registers
its own with ``STUDIES.add(study.name, study)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from unified.registry import Registry

_FOLDER_NAME = re.compile(r"\+?[A-Za-z0-9][A-Za-z0-9_+-]*")


@dataclass(frozen=True)
class Variant:
    """One row of a study.

    Attributes:
        name: The row's name (a folder name: letters, digits, ``-``, ``_``, ``+``).
        overrides: ``key.sub=value`` overrides of the base experiment; ``model.<key>`` patches the model YAML.
        reference: The variant this one's paired difference is taken against (None: the study's baseline).
        description: What the row stands for, in the report.
    """

    name: str
    overrides: tuple[str, ...] = ()
    reference: str | None = None
    description: str = ""


@dataclass(frozen=True)
class Study:
    """A named list of variants over one base experiment, with a fixed budget per run.

    Attributes:
        name: What ``--study`` takes.
        description: One paragraph for ``--list`` and the report.
        baseline: The variant every other one is compared with unless it names its own reference.
        variants: The rows, in report order.
        base: The base experiment: a file or a packaged experiment's name.
        overrides: Applied to the base before each variant's own (what all rows share).
        epochs: Epochs per run (``--epochs`` overrides it): a fixed count, never a time budget.
        img_size: Training and evaluation image size (``--img`` overrides it).
    """

    name: str
    description: str
    baseline: str
    variants: tuple[Variant, ...]
    base: str = "synthetic"
    overrides: tuple[str, ...] = ()
    epochs: int = 8
    img_size: int = 160

    def __post_init__(self) -> None:
        names = [v.name for v in self.variants]
        odd = [name for name in names if not _FOLDER_NAME.fullmatch(name)]
        if odd:  # each variant's runs live in a folder of its name
            raise ValueError(
                f"study {self.name!r}: variant names {odd} must be letters, digits, '-', '_', '+'"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"study {self.name!r}: duplicate variant names in {names}")
        missing = [r for r in [self.baseline, *(v.reference for v in self.variants)] if r and r not in names]
        if missing:
            raise ValueError(f"study {self.name!r}: reference(s) {missing} are not variants ({names})")

    def variant(self, name: str) -> Variant:
        """The variant called ``name``.

        Raises:
            KeyError: naming the study's variants.
        """
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise KeyError(
            f"study {self.name!r} has no variant {name!r}; its variants: {[v.name for v in self.variants]}"
        )

    def reference_of(self, variant: Variant) -> str | None:
        """The name of the variant ``variant`` is compared with (None for the baseline itself)."""
        reference = variant.reference or self.baseline
        return None if reference == variant.name else reference


#: Registered studies (``unified ablate --list``).
STUDIES: Registry[Study] = Registry("ablation study")

# ------------------------------------------------------------------------------------------- knobs
# The switches of implicit knowledge the studies turn. Model YAML keys go under `model.`, so they patch
# the packaged model the base experiment names (yolor-tiny for `synthetic`).

#: The tasks of the base experiment (configs/experiments/synthetic.yaml).
ALL_TASKS = ("detect", "jdc", "jde")
#: The tasks whose own implicit knowledge ``task_options.<task>.implicit`` switches. Not detect: its head's
#: implicit knowledge is the model YAML's ``head`` (detect's options follow it when unset, and setting them
#: would override ``head.implicit`` and ``head.refine`` in every row).
_IMPLICIT_TASKS = ("jdc", "jde")


def tasks(*names: str) -> str:
    """The override enabling exactly ``names`` (the options and weights of the others are set aside)."""
    return f"tasks=[{', '.join(names)}]"


def implicit(
    *,
    head: bool,
    feature_alignment: bool,
    refine: Sequence[str],
    task: bool,
    form: str | None = None,
    names: Iterable[str] = ALL_TASKS,
) -> tuple[str, ...]:
    """Every switch of implicit knowledge, each set once, so a row says all it means.

    Args:
        head: The detection head's implicit refinement (``model.head.implicit``).
        feature_alignment: Implicit feature alignment of the features the heads read
            (``model.head.feature_alignment``).
        refine: How the head refines its prediction: a subset of ``add``, ``mul`` (``model.head.refine``).
        task: Each task's own implicit knowledge (``task_options.<task>.implicit``).
        form: The form of g(z) everywhere (``model.head.implicit_form``, ``task_options.<task>.implicit_form``);
            None leaves the shipped form.
        names: The tasks enabled.
    """
    value = "true" if task else "false"
    names = [name for name in names if name in _IMPLICIT_TASKS]
    knobs = [
        f"model.head.implicit={'true' if head else 'false'}",
        f"model.head.feature_alignment={'true' if feature_alignment else 'false'}",
        f"model.head.refine=[{', '.join(refine)}]",
        *(f"task_options.{name}.implicit={value}" for name in names),
    ]
    if form is not None:
        knobs.append(f"model.head.implicit_form={form}")
        knobs += [f"task_options.{name}.implicit_form={form}" for name in names]
    return tuple(knobs)


def no_implicit(names: Iterable[str] = ALL_TASKS) -> tuple[str, ...]:
    """The yolov4-csp-style baseline: no implicit knowledge in the head, the neck or any task."""
    return implicit(head=False, feature_alignment=False, refine=(), task=False, names=names)


def full_implicit(form: str = "vector", names: Iterable[str] = ALL_TASKS) -> tuple[str, ...]:
    """YOLOR: feature alignment, refinement by add and multiply, every task's implicit knowledge, in ``form``."""
    return implicit(
        head=True, feature_alignment=True, refine=("add", "mul"), task=True, form=form, names=names
    )


def refine_only(*ops: str) -> tuple[str, ...]:
    """Only the detection head's prediction refinement, by ``ops``: no alignment, no task implicit knowledge."""
    return implicit(head=True, feature_alignment=False, refine=ops, task=False)


# ----------------------------------------------------------------------------------------- studies
#: What every study's runs share: no scores on the way (one evaluation after the last epoch), and fp32, so
#: that runs spread over hosts compute alike (``auto`` picks bf16 on some CPUs and fp16 on GPUs).
_COMMON = ("eval.interval=0", "train.precision=fp32")

PAPER = Study(
    name="paper",
    description=(
        "The rows of the YOLOR paper's ablation (Wang, Yeh, Liao 2021, sections 4.2-4.6) on the built-in "
        "world: the yolov4-csp-style baseline without implicit knowledge, + feature alignment, + prediction "
        "refinement by add, by multiply and by both, the three forms of g(z) (vector, neural network, matrix "
        "factorisation) with all implicit knowledge on, and the multi-task rows JDC vs iJDC (detect + jdc) "
        "and JDE vs iJDE (detect + jde)."
    ),
    baseline="baseline",
    overrides=_COMMON,
    variants=(
        Variant("baseline", no_implicit(), description="no implicit knowledge (yolov4-csp-style)"),
        Variant(
            "+feature-alignment",
            implicit(head=False, feature_alignment=True, refine=(), task=False),
            description="baseline + implicit feature alignment (add to the features the heads read)",
        ),
        Variant(
            "+refine-add", refine_only("add"), description="baseline + prediction refinement by addition"
        ),
        Variant(
            "+refine-mul",
            refine_only("mul"),
            description="baseline + prediction refinement by multiplication",
        ),
        Variant(
            "+refine-both", refine_only("add", "mul"), description="baseline + refinement by add and multiply"
        ),
        Variant("form-vector", full_implicit("vector"), description="all implicit knowledge, g(z) = z"),
        Variant("form-nn", full_implicit("nn"), description="all implicit knowledge, g(z) = W z"),
        Variant("form-mf", full_implicit("mf"), description="all implicit knowledge, g(z) = Z^T c"),
        Variant(
            "JDC",
            (tasks("detect", "jdc"), *no_implicit(("detect", "jdc"))),
            reference="JDC",  # a reference of its own: other tasks than the baseline's
            description="detect + jdc without implicit knowledge",
        ),
        Variant(
            "iJDC",
            (tasks("detect", "jdc"), *full_implicit("vector", ("detect", "jdc"))),
            reference="JDC",
            description="detect + jdc with implicit knowledge (compared with JDC)",
        ),
        Variant(
            "JDE",
            (tasks("detect", "jde"), *no_implicit(("detect", "jde"))),
            reference="JDE",
            description="detect + jde without implicit knowledge",
        ),
        Variant(
            "iJDE",
            (tasks("detect", "jde"), *full_implicit("vector", ("detect", "jde"))),
            reference="JDE",
            description="detect + jde with implicit knowledge (compared with JDE)",
        ),
    ),
)

JOINT = Study(
    name="joint",
    description=(
        "Single-task against joint training: the three tasks trained together (the reference) against "
        "detect alone, detect + jdc and detect + jde (jdc and jde build on detect), all with the base's "
        "implicit knowledge (yolor-tiny as shipped). Each metric is compared where both runs have it."
    ),
    baseline="joint",
    overrides=_COMMON,
    variants=(
        Variant("joint", (tasks(*ALL_TASKS),), description="detect + jdc + jde trained together"),
        Variant("detect-only", (tasks("detect"),), description="detect alone"),
        Variant("detect+jdc", (tasks("detect", "jdc"),), description="detect with jdc"),
        Variant("detect+jde", (tasks("detect", "jde"),), description="detect with jde"),
    ),
)

SHARING = Study(
    name="sharing",
    description=(
        "Per-task against shared implicit knowledge (issue 15 section 1): for each form, every consumer its "
        "own tensors (sharing none, the reference of its form) against one shared representation (alias "
        "for the vector form; a shared latent with per-consumer g for nn and mf)."
    ),
    baseline="per-task-vector",
    overrides=_COMMON,
    variants=(
        Variant("per-task-vector", (*full_implicit("vector"), "implicit.sharing=none")),
        Variant(
            "shared-vector", (*full_implicit("vector"), "implicit.sharing=alias"), reference="per-task-vector"
        ),
        Variant("per-task-nn", (*full_implicit("nn"), "implicit.sharing=none")),
        Variant("shared-nn", (*full_implicit("nn"), "implicit.sharing=latent"), reference="per-task-nn"),
        Variant("per-task-mf", (*full_implicit("mf"), "implicit.sharing=none")),
        Variant("shared-mf", (*full_implicit("mf"), "implicit.sharing=latent"), reference="per-task-mf"),
    ),
)

IMPLICIT = Study(
    name="implicit",
    description=(
        "A short check with the oldest switches of the model YAML: the heads' implicit refinement off "
        "(model.head.implicit=false: plain YOLO heads) against yolor-tiny as shipped, and the nn and mf forms "
        "of every head's implicit tensors."
    ),
    baseline="head-off",
    overrides=_COMMON,
    variants=(
        Variant("head-off", ("model.head.implicit=false",), description="heads without implicit refinement"),
        Variant("yolor", (), description="the model as shipped (vector form)"),
        Variant(
            "nn",
            (
                "model.head.implicit_form=nn",
                "task_options.jdc.implicit_form=nn",
                "task_options.jde.implicit_form=nn",
            ),
        ),
        Variant(
            "mf",
            (
                "model.head.implicit_form=mf",
                "task_options.jdc.implicit_form=mf",
                "task_options.jde.implicit_form=mf",
            ),
        ),
    ),
)

for _study in (PAPER, JOINT, SHARING, IMPLICIT):
    STUDIES.add(_study.name, _study)

#: The study ``unified ablate`` runs without ``--study``.
DEFAULT_STUDY = PAPER.name

__all__ = [
    "ALL_TASKS",
    "DEFAULT_STUDY",
    "STUDIES",
    "Study",
    "Variant",
    "full_implicit",
    "implicit",
    "no_implicit",
    "refine_only",
    "tasks",
]
