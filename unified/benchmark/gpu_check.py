"""The prepared GPU check behind ``tools/gpu_check.sh``: everything of the CUDA path in one run, one JSON.

    python -m unified.benchmark.gpu_check --out gpu_check.json [--official-repo PATH] [--budget 470]

Steps, each in its own process with its own time limit, so one that hangs (an NCCL rendezvous) or fails
costs only its own share and the JSON still tells what the others did:

1. ``environment``: GPUs, driver (``nvidia-smi``), torch / CUDA / cuDNN / NCCL versions;
2. ``cuda_tests``: ``pytest -m cuda`` (the tests marked for CUDA; unmarked ones are not run here);
3. ``demo_amp``: one epoch of the demo (``configs/experiments/synthetic.yaml``) on GPU 0 with
   ``train.precision: auto`` (fp16 AMP with a gradient scaler on CUDA), its metrics;
4. ``torchrun_nccl``: the same epoch under ``torchrun`` with the nccl backend on every visible GPU (one
   rank when there is one) and ``--sync-bn``;
5. ``benchmark``: ``unified benchmark --device cuda --quick`` with the official code beside it when a
   checkout is found, its JSON.

Without CUDA it writes ``{"cuda": false, ...}`` and exits 2 at once.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

#: Seconds each step may take at most (their sum stays under the 8 minutes the issue allows).
LIMITS = {"environment": 30, "cuda_tests": 100, "demo_amp": 120, "torchrun_nccl": 100, "benchmark": 120}

#: Where an official checkout is looked for when ``--official-repo`` is not given.
OFFICIAL_CANDIDATES = (
    REPO / "shared/reference/yolor-official",
    REPO.parent / "shared/reference/yolor-official",
)

#: The demo world made smaller than the demo's own (600 + 100 images, 6 sequences of 60 frames at 256²):
#: one epoch then is what the check needs, and making the world on the CPU takes seconds, not minutes.
WORLD = [
    "synthetic.images=160",
    "synthetic.val_images=32",
    "synthetic.sequences=2",
    "synthetic.val_sequences=1",
    "synthetic.frames=20",
]


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_step(
    name: str, command: list[str], env: dict[str, str] | None = None, cwd: Path = REPO
) -> dict[str, Any]:
    """Run one step's command under its limit; what it printed last, its exit code and its seconds."""
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=LIMITS[name],
        )
        rc, out = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        rc = 124
        out = (
            (exc.stdout or b"").decode(errors="replace")
            if isinstance(exc.stdout, bytes)
            else (exc.stdout or "")
        )
        out += f"\n[gpu_check] {name}: killed after {LIMITS[name]} s"
    except OSError as exc:
        rc, out = 127, str(exc)
    return {
        "command": " ".join(command),
        "rc": rc,
        "ok": rc == 0,
        "seconds": round(time.perf_counter() - started, 1),
        "output_tail": _tail(out),
    }


def environment() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }
    try:
        info["nccl"] = ".".join(str(v) for v in torch.cuda.nccl.version())
    except (AttributeError, RuntimeError, TypeError):
        info["nccl"] = None
    if shutil.which("nvidia-smi"):
        try:
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=LIMITS["environment"],
            )
            info["nvidia_smi"] = smi.stdout.strip().splitlines()
        except (OSError, subprocess.SubprocessError) as exc:
            info["nvidia_smi"] = f"failed: {exc}"
    return info


def _metrics(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "metrics.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 - the steps in order, each a few lines
    """Run the check; exit 0 when every step passed, 1 when one failed, 2 without CUDA."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu_check.json", help="the JSON to write (default gpu_check.json)")
    p.add_argument("--official-repo", default="", help="checkout of the official YOLOR paper branch")
    p.add_argument("--skip", default="", help="comma-separated steps to leave out")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    env = environment()
    report: dict[str, Any] = {"cuda": bool(env["cuda_available"]), "environment": env, "steps": {}}
    if not env["cuda_available"]:
        report["reason"] = "CUDA is not available (torch.cuda.is_available() is False): nothing to check"
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"gpu_check: {report['reason']}; wrote {out}", file=sys.stderr)
        return 2
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    python = sys.executable
    gpus = len(env["gpus"])
    steps = report["steps"]
    scratch = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    world = [f"synthetic.out={scratch / 'world'}", *WORLD]
    common = ["--config", "synthetic", "--epochs", "1", "--no-progress", "--exist-ok", "train.workers=4"]

    def log(text: str) -> None:
        print(f"[gpu_check {time.perf_counter() - started:5.0f} s] {text}", file=sys.stderr, flush=True)

    if "cuda_tests" not in skip:
        log("pytest -m cuda")
        junit = scratch / "cuda_tests.xml"
        steps["cuda_tests"] = run_step(
            "cuda_tests",
            [
                python,
                "-m",
                "pytest",
                "-q",
                "-m",
                "cuda",
                "-p",
                "no:cacheprovider",
                f"--junitxml={junit}",
                "tests",
            ],
        )
        steps["cuda_tests"]["counts"] = _junit_counts(junit)
    if "demo_amp" not in skip:
        log("demo, one epoch, fp16 AMP on GPU 0")
        project = scratch / "runs"
        steps["demo_amp"] = run_step(
            "demo_amp",
            [
                python,
                "-m",
                "unified",
                "train",
                *common,
                "--device",
                "0",
                "--project",
                str(project),
                "--name",
                "amp",
                *world,
            ],
        )
        steps["demo_amp"]["metrics"] = _metrics(project / "amp")
        steps["demo_amp"]["precision"] = "auto (fp16 AMP with GradScaler on CUDA: resolve_precision)"
    if "torchrun_nccl" not in skip:
        log(f"torchrun, nccl, {gpus} rank(s), --sync-bn")
        project = scratch / "runs"
        steps["torchrun_nccl"] = run_step(
            "torchrun_nccl",
            [
                python,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc_per_node={gpus}",
                "-m",
                "unified",
                "train",
                *common,
                "--sync-bn",
                "--device",
                ",".join(str(i) for i in range(gpus)),
                "--project",
                str(project),
                "--name",
                "ddp",
                *world,
            ],
        )
        steps["torchrun_nccl"]["ranks"] = gpus
        if gpus == 1:
            # A world of one never joins a process group (unified.distributed.init_distributed), so NCCL and
            # SyncBN are exercised by the cuda test tests/engine/test_cuda.py on one GPU instead.
            steps["torchrun_nccl"]["note"] = "one GPU: one rank, no process group; nccl + SyncBN: cuda_tests"
        steps["torchrun_nccl"]["metrics"] = _metrics(project / "ddp")
    if "benchmark" not in skip:
        official = (
            Path(args.official_repo)
            if args.official_repo
            else next((c for c in OFFICIAL_CANDIDATES if (c / "models").is_dir()), None)
        )
        log(f"benchmark --device cuda --quick (official code: {official or 'not found'})")
        bench_json = scratch / "benchmark.json"
        command = [
            python,
            "-m",
            "unified",
            "benchmark",
            "--device",
            "cuda",
            "--quick",
            "--json",
            str(bench_json),
        ]
        if official is not None:
            command += ["--official-repo", str(official)]
        steps["benchmark"] = run_step("benchmark", command)
        try:
            steps["benchmark"]["result"] = json.loads(bench_json.read_text())
        except (OSError, ValueError):
            steps["benchmark"]["result"] = None
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["ok"] = all(s["ok"] for s in steps.values())
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    shutil.rmtree(scratch, ignore_errors=True)
    for name, step in steps.items():
        log(f"{name}: {'ok' if step['ok'] else 'FAILED rc ' + str(step['rc'])} in {step['seconds']} s")
    log(f"wrote {out}")
    return 0 if report["ok"] else 1


def _junit_counts(path: Path) -> dict[str, int] | None:
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return None
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}


if __name__ == "__main__":
    sys.exit(main())
