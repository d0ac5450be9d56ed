"""Ablation studies (``unified ablate``, ``tools/ablate.py``): named lists of variants of one experiment,
each run with several seeds at a fixed budget, reported as mean ± standard deviation and as the paired
difference from a reference variant with its confidence interval (docs/ABLATION.md).

- :mod:`unified.ablation.studies`: :class:`Study`, :class:`Variant`, the :data:`STUDIES` registry;
- :mod:`unified.ablation.plan`: every variant resolved and checked, one :class:`Job` per variant and seed;
- :mod:`unified.ablation.runner`: running and resuming the jobs;
- :mod:`unified.ablation.stats`: mean, standard deviation, paired t interval;
- :mod:`unified.ablation.report`: ``ablation.csv``, ``ablation.md``, ``ablation.png``.
"""

from unified.ablation.plan import Budget, Job, StudyError, plan_jobs, resolve_variant
from unified.ablation.report import write_report
from unified.ablation.runner import run_jobs
from unified.ablation.stats import PairedDifference, Summary, paired_difference, summarize
from unified.ablation.studies import DEFAULT_STUDY, STUDIES, Study, Variant

__all__ = [
    "DEFAULT_STUDY",
    "STUDIES",
    "Budget",
    "Job",
    "PairedDifference",
    "Study",
    "StudyError",
    "Summary",
    "Variant",
    "paired_difference",
    "plan_jobs",
    "resolve_variant",
    "run_jobs",
    "summarize",
    "write_report",
]
