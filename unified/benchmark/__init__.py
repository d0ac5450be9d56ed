"""The performance benchmark behind ``tools/benchmark.py`` (see ``docs/PERFORMANCE.md``).

Training steps run through the real :class:`unified.engine.Trainer`; every ratio is taken between
variants timed side by side in one interleaved loop, so it holds on a shared, drifting machine.
"""

from unified.benchmark.profiles import FULL, PROFILES, QUICK, TINY, Profile
from unified.benchmark.runner import OFFICIAL_KEYS, REQUIRED_KEYS, check_result, markdown_table, run_benchmark
from unified.benchmark.timing import Timings, interleaved

__all__ = [
    "FULL",
    "OFFICIAL_KEYS",
    "PROFILES",
    "Profile",
    "QUICK",
    "REQUIRED_KEYS",
    "TINY",
    "Timings",
    "check_result",
    "interleaved",
    "markdown_table",
    "run_benchmark",
]
