"""The benchmark: its tiny mode end to end (keys, finite numbers, table) and its parts.

No test here asserts a time: speed is judged by running the benchmark, never by a timed test.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.tools.helpers import load_tool
from unified.benchmark import OFFICIAL_KEYS, REQUIRED_KEYS, Timings, check_result, interleaved, markdown_table
from unified.benchmark.official import OfficialRepoError, load_official
from unified.benchmark.tracking import detections_from_ground_truth, motmetrics_sequence, run_ours
from unified.benchmark.workloads import coco_like_info, random_batch


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    tool = load_tool("benchmark")
    code = tool.main(["--tiny", "--json", str(out), "--threads", "1"])
    return code, json.loads(out.read_text())


def test_tiny_run_has_every_key_with_finite_numbers(tiny_run):
    code, result = tiny_run
    assert code == 0
    assert check_result(result) == []
    for key in REQUIRED_KEYS:
        assert key in result
    assert not any(k in result for k in OFFICIAL_KEYS)  # no official checkout given
    assert set(result["train_step_images_per_s"]) == {"paper", "demo"}
    assert set(result["multitask_overhead"]) == {"paper", "demo"}
    assert set(result["peak_memory_mb"]) == {"paper", "demo"}
    assert {"unfused", "fused"} <= set(result["infer_latency_ms"])
    assert "ours" in result["tracker_fps"]
    for value in result["train_step_images_per_s"].values():
        assert value > 0
    assert result["data_vs_step_ratio"] > 0
    assert result["peak_memory_mb"]["paper"] > 10  # a whole Python process with torch, in MiB
    assert result["versions"]["torch"] == torch.__version__
    assert result["workloads"]["demo"]["tasks"] == ["detect", "jdc", "jde"]


def test_tiny_run_table_names_every_measurement(tiny_run):
    _, result = tiny_run
    table = markdown_table(result)
    for words in ("Training step", "Inference latency", "Fused implicit overhead", "Multi-task overhead"):
        assert words in table
    for words in ("FLOP utilisation", "Data pipeline", "Tracker", "Peak memory", "| lever |"):
        assert words in table
    assert all(line.startswith("|") for line in table.splitlines() if line)


def test_tiny_run_has_onnx_runtime_rows_and_the_precision_probe(tiny_run):
    pytest.importorskip("onnxruntime")
    _, result = tiny_run
    group = result["onnx_inference"]
    assert group["batches"] == [1, 2] and set(group["models"]) == {"paper", "demo"}
    variants = {"pytorch_fp32", "onnxruntime_fp32", "onnxruntime_int8"}
    for row in group["models"].values():
        assert set(row["latency_ms"]) == variants and set(row["images_per_s"]) == variants
        assert all(v > 0 for v in [*row["latency_ms"].values(), *row["images_per_s"].values()])
        assert "latency_speedup_vs_official" not in row  # no official checkout given
    assert group["models"]["demo"]["tasks"] == ["detect", "jdc", "jde"]
    probe = result["precision_probe"]
    assert set(probe["conv3x3_gflops"]) == {"fp32", "bf16"} and probe["auto_picks"] in ("fp32", "bf16")
    table = markdown_table(result)
    assert "Inference latency by backend" in table and "onnxruntime_int8" in table and "Host probe" in table


def test_onnx_rows_are_skipped_off_the_cpu():
    from unified.benchmark.onnx_rows import onnx_group, onnx_table_rows
    from unified.benchmark.profiles import TINY

    group = onnx_group(torch.device("cuda"), TINY)
    assert "CPU only" in group["skipped"]
    assert "skipped" in onnx_table_rows({"onnx_inference": group})[0][1]


def test_check_result_reports_missing_and_non_finite():
    result = {k: 1.0 for k in REQUIRED_KEYS}
    assert check_result(result) == []
    result["tracker_fps"] = {"ours": float("nan")}
    del result["peak_memory_mb"]
    problems = check_result(result)
    assert any("peak_memory_mb" in p for p in problems)
    assert any("tracker_fps.ours" in p for p in problems)


def test_interleaved_takes_turns_and_ratios_pair_repeats():
    calls = []
    timings = interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1
    )
    assert calls == ["a", "b"] + ["a", "b", "b", "a", "a", "b"]  # warm-ups, then turns in rotating order
    assert [len(v) for v in timings.seconds.values()] == [3, 3]
    # Medians of per-repeat ratios: a drifting machine slows both sides of a pair alike.
    t = Timings({"slow": [2.0, 20.0, 4.0], "fast": [1.0, 10.0, 2.0]})
    assert t.ratio("slow", "fast") == pytest.approx(2.0)
    assert t.median("slow") == 4.0
    with pytest.raises(ValueError):
        interleaved({"a": lambda: None}, repeats=0)


def test_random_batch_follows_the_batch_contract():
    info = coco_like_info(nc=80, num_identities=500)
    batch = random_batch(4, 64, info, boxes_per_image=5, seed=1)
    targets = batch["boxes"]
    assert batch["images"].shape == (4, 3, 64, 64)
    assert targets.shape == (20, 6) and batch["identities"].shape == (20,)
    assert torch.equal(targets[:, 0], torch.arange(4).repeat_interleave(5).float())
    assert ((targets[:, 2:6] > 0) & (targets[:, 2:6] < 1)).all()
    for i in range(4):  # distinct identities within an image (the kind's example leaves one without)
        ids = batch["identities"][targets[:, 0] == i].tolist()
        assert len(set(ids)) == 5 and ids.count(-1) == 1
    # Every kind the registered tasks read is in the batch, per-instance ones row for row with the boxes.
    assert set(info.label_kinds) <= set(batch) and set(batch["label_mask"]) == set(info.label_kinds)
    assert batch["masks"].shape[0] == 20 and batch["keypoints"].shape == (20, 17, 3)
    # Image labels are the classes present in each image.
    for i in range(4):
        classes = set(targets[targets[:, 0] == i, 1].long().tolist())
        assert set(batch["image_labels"][i].nonzero().flatten().tolist()) == classes
    assert all(m.all() for m in batch["label_mask"].values())
    assert torch.equal(random_batch(4, 64, info, seed=1)["boxes"], targets)


def test_tracker_detections_come_from_the_ground_truth():
    gt = motmetrics_sequence("TUD-Stadtmitte")
    frames = detections_from_ground_truth(gt, seed=0)
    again = detections_from_ground_truth(gt, seed=0)
    table = np.loadtxt(gt, delimiter=",")
    assert len(frames) == int(table[:, 0].max())
    assert all(np.array_equal(a.boxes, b.boxes) for a, b in zip(frames, again))
    total = sum(len(f.boxes) for f in frames)
    assert 0.7 * len(table) < total < 1.3 * len(table)
    assert all((f.boxes[:, 2:] > f.boxes[:, :2]).all() for f in frames if len(f.boxes))
    ids = run_ours(frames)
    people = len(np.unique(table[:, 1]))
    assert people <= ids <= 4 * people  # noisy detections split some tracks, but it does track


def test_peak_rss_follows_a_large_allocation():
    if not Path("/proc/self/status").exists():
        pytest.skip("no /proc on this system")
    # A fresh interpreter: in a long-lived test worker the peak is already far above one small allocation
    # (and clear_refs may be refused), so the rise would be invisible.
    code = (
        "import numpy as np\n"
        "from unified.benchmark.memory import peak_rss_mb, reset_peak_rss\n"
        "before = peak_rss_mb()\n"
        "block = np.ones(64 * 2**20 // 8)\n"
        "after = peak_rss_mb()\n"
        "del block\n"
        "reset = reset_peak_rss()\n"
        "print(before, after, peak_rss_mb() if reset else 'nan')\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    before, after, after_reset = map(float, out.stdout.split())
    assert after >= before + 50
    if not math.isnan(after_reset):  # the kernel let us reset it: the freed block no longer counts
        assert after_reset <= after - 50


def _fake_official_repo(root: Path) -> Path:
    """A stand-in with the official layout and the line the compatibility edit fixes (no official code)."""
    (root / "models").mkdir(parents=True)
    (root / "utils").mkdir()
    (root / "models" / "__init__.py").write_text("")
    (root / "utils" / "__init__.py").write_text("")
    (root / "models" / "yolor-p6.yaml").write_text("nc: 80\n")
    (root / "models" / "common.py").write_text("")
    (root / "models" / "yolo.py").write_text("import cv2\n\nclass Model:\n    pass\n")
    (root / "utils" / "loss.py").write_text(
        "def compute_loss(p, targets, model):\n"
        "    return 'gj.clamp_(0, gain[3] - 1), gi.clamp_(0, gain[2] - 1)'\n"
    )
    return root


def test_official_code_is_imported_from_a_patched_copy(tmp_path, monkeypatch):
    repo = _fake_official_repo(tmp_path / "yolor")
    original = (repo / "utils" / "loss.py").read_text()
    had_cv2 = "cv2" in sys.modules
    for name in ("models", "models.yolo", "utils", "utils.loss"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    try:
        code = load_official(repo)
        assert "int(gain[3]) - 1" in code.compute_loss(None, None, None)
        assert (repo / "utils" / "loss.py").read_text() == original  # the checkout is never modified
        assert code.root != repo
        # A stand-in for a missing OpenCV must not leak to other libraries (supervision checks for cv2).
        assert ("cv2" in sys.modules) == had_cv2
    finally:
        for name in ("models", "models.yolo", "models.common", "utils", "utils.loss"):
            sys.modules.pop(name, None)


def test_official_repo_errors_name_the_missing_file(tmp_path):
    (tmp_path / "models").mkdir()
    with pytest.raises(OfficialRepoError, match="models/yolo.py"):
        load_official(tmp_path)


def test_numbers_in_a_result_are_json_safe(tiny_run):
    _, result = tiny_run

    def walk(value):
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, float):
            assert math.isfinite(value)

    walk({k: result[k] for k in REQUIRED_KEYS})


def test_same_convolutions_holds_for_fused_yolor_csp_and_yolov4_csp_only():
    from unified.benchmark.measures import same_convolutions
    from unified.benchmark.workloads import build_inference

    models = Path(__file__).resolve().parents[2] / "configs" / "models"
    cpu = torch.device("cpu")

    def model(name: str, fused: bool = True) -> torch.nn.Module:
        return build_inference(models / f"{name}.yaml", cpu, batch=1, size=64, fused=fused).model

    # The paper's claim, checked structurally: once fused, implicit knowledge leaves no op behind.
    assert same_convolutions(model("yolor-csp"), model("yolov4-csp"))
    # Unfused, BN and implicit ops are still there: not the same computation, whatever the timer says.
    assert not same_convolutions(model("yolor-csp", fused=False), model("yolov4-csp", fused=False))
    assert not same_convolutions(model("yolor-csp"), model("yolor-tiny"))


@pytest.mark.slow
def test_compile_rows_time_a_compiled_step_and_forward():
    """The ``--compile`` rows on the tiny model: a compiled detection training step and a compiled fused
    forward are timed beside the eager ones (the multi-task demo step is left to the benchmark itself: its
    first compilation takes minutes on 2 cores)."""
    import dataclasses

    from unified.benchmark import measures as m
    from unified.benchmark import workloads as w
    from unified.benchmark.profiles import TINY

    cpu = torch.device("cpu")
    profile = dataclasses.replace(TINY, compile=True, levers=False)
    cfg = w.experiment(model=profile.paper_model, batch=profile.paper_batch, size=profile.paper_size)
    group = m.train_group("paper", cfg, w.coco_like_info(), cpu, profile, (["detect"], ["detect"]))
    assert group.compile_seconds is not None and group.compile_seconds > 0
    assert all(math.isfinite(t) and t > 0 for t in group.timings.seconds["lever_compiled"])
    inference = m.inference_group(cpu, profile)
    assert inference.compile_seconds is not None and inference.compile_seconds > 0
    assert all(math.isfinite(t) and t > 0 for t in inference.latency.seconds["lever_compiled"])
