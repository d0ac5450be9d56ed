"""Peak memory of a training step, each measured in a fresh process so earlier work cannot inflate it.

On CPU the figure is the peak resident set size (``VmHWM`` in ``/proc/self/status``, reset through
``/proc/self/clear_refs`` after the model is built and moved, where the kernel allows it); on CUDA it
is ``torch.cuda.max_memory_allocated``. The figure covers the whole process: interpreter, libraries,
weights, optimiser state and the step's activations.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

_HWM = re.compile(r"^VmHWM:\s+(\d+)\s+kB", re.MULTILINE)


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (``nan`` where ``/proc`` is not available)."""
    try:
        match = _HWM.search(Path("/proc/self/status").read_text())
    except OSError:
        return float("nan")
    return int(match.group(1)) / 1024 if match else float("nan")


def reset_peak_rss() -> bool:
    """Reset the peak RSS to the current RSS (Linux ``clear_refs`` 5); False where not permitted."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def measure_in_subprocesses(specs: list[dict[str, Any]], timeout: float = 900.0) -> list[dict[str, float]]:
    """Run :func:`_child` for every spec, each in its own fresh interpreter (all at once), and collect them.

    Raises:
        RuntimeError: with a child's error output if it fails.
    """
    code = (
        "import sys, json; from unified.benchmark.memory import _child; "
        "print(json.dumps(_child(json.loads(sys.argv[1]))))"
    )
    root = Path(__file__).resolve().parents[2]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=root,
        )
        for spec in specs
    ]
    results = []
    for spec, child in zip(specs, children):
        try:
            out, err = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate()
            raise RuntimeError(
                f"memory measurement {spec.get('name')} timed out after {timeout:.0f} s"
            ) from None
        if child.returncode != 0:
            raise RuntimeError(f"memory measurement {spec.get('name')} failed:\n{err[-3000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def _child(spec: dict[str, Any]) -> dict[str, float]:
    """Build the workload of ``spec``, run ``steps`` training steps, report the peak memory (MiB)."""
    import torch

    from unified.benchmark import workloads as w

    torch.set_num_threads(int(spec["threads"]))
    device = torch.device(spec["device"])
    base = w.demo_experiment() if spec["base"] == "demo" else None
    info = w.demo_info() if spec["base"] == "demo" else w.coco_like_info()
    cfg = w.experiment(
        base,
        model=spec.get("model"),
        tasks=spec.get("tasks"),
        batch=spec["batch"],
        size=spec["size"],
        precision=spec.get("precision"),
    )
    workload = w.build_train_workload(cfg, info, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device) / 2**20
    else:
        resettable = reset_peak_rss()
        before = peak_rss_mb()
    for _ in range(int(spec["steps"])):
        workload.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        return {"peak_mb": peak, "before_step_mb": before, "resettable": 1.0}
    return {"peak_mb": peak_rss_mb(), "before_step_mb": before, "resettable": float(resettable)}


__all__ = ["measure_in_subprocesses", "peak_rss_mb", "reset_peak_rss"]
