"""tools/ablate.py (``unified ablate``): studies validate, statistics on hand numbers, resume, the report, and
one real tiny study end to end."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import pytest
import yaml

from tests.tools.helpers import REPO, load_tool
from unified.ablation import (
    STUDIES,
    Budget,
    Study,
    StudyError,
    Variant,
    paired_difference,
    plan_jobs,
    summarize,
)
from unified.ablation.plan import JOB_CONFIG, job_overrides, parse_shard, resolve_variant, shard_jobs
from unified.ablation.report import write_report
from unified.ablation.runner import (
    RESULT,
    STUDY_RECORD,
    UnseenWorld,
    check_study_folder,
    comparable_config,
    run_job,
)
from unified.commands import COMMANDS
from unified.commands.ablate import main
from unified.engine.experiment import TrainConfig

#: Knobs another change adds (issue 15 section 1); a variant that uses one before it exists is skipped,
#: naming it, instead of failing. Remove once they are in.
PENDING_KEYS = (
    "model.head.refine",
    "model.head.feature_alignment",
    "task_options.jdc.implicit",
    "task_options.jde.implicit",
    "implicit",
    "implicit.sharing",
)
#: The registered studies when this module is collected (before the tests register their own).
BUILT_IN = [(name, v.name) for name in STUDIES.names() for v in STUDIES.get(name).variants]

# --------------------------------------------------------------------------------------------- studies


@pytest.mark.parametrize(("study_name", "variant_name"), BUILT_IN, ids=[f"{s}:{v}" for s, v in BUILT_IN])
def test_every_registered_variant_is_a_valid_experiment(
    study_name: str, variant_name: str, tmp_path: Path
) -> None:
    study = STUDIES.get(study_name)
    variant = study.variant(variant_name)
    budget = Budget(study.epochs, study.img_size, 1)
    try:
        cfg = resolve_variant(study, variant, job_overrides(budget, 0, tmp_path / variant.name / "seed0"))
    except StudyError as exc:
        pending = [k for k in PENDING_KEYS if f"key '{k}'" in str(exc) and "unknown key" in str(exc)]
        if pending:
            pytest.skip(f"{study_name}:{variant_name} uses {pending[0]!r}, which does not exist yet")
        raise
    assert cfg.train.epochs == study.epochs and cfg.train.time_budget_min == 0
    assert cfg.train.img_size == study.img_size


def test_studies_cover_the_paper_rows_and_ours() -> None:
    assert {"paper", "joint", "sharing"} <= set(STUDIES.names())
    paper = STUDIES.get("paper")
    names = [v.name for v in paper.variants]
    assert names[0] == paper.baseline == "baseline"
    for row in ("+feature-alignment", "+refine-add", "+refine-mul", "+refine-both", "form-vector", "form-nn"):
        assert row in names
    assert paper.reference_of(paper.variant("iJDC")) == "JDC"
    assert paper.reference_of(paper.variant("iJDE")) == "JDE"
    assert paper.reference_of(paper.variant("JDC")) is None  # other tasks than the baseline's: its own
    baseline = paper.variant("baseline").overrides
    assert "model.head.implicit=false" in baseline and "task_options.jdc.implicit=false" in baseline


def test_a_study_refuses_references_that_are_not_variants() -> None:
    with pytest.raises(ValueError, match="not variants"):
        Study("broken", "", "nope", (Variant("a"),))
    with pytest.raises(ValueError, match="must be letters"):
        Study("broken", "", "a", (Variant("a"), Variant("../b")))


BAD = Study(
    "test-bad-knob",
    "a study with a knob that does not exist",
    "fine",
    (Variant("fine", ("model.head.implicit=false",)), Variant("broken", ("model.head.implicitness=false",))),
    epochs=1,
    img_size=64,
)


def test_an_unknown_knob_fails_the_study_at_start_in_one_line(tmp_path: Path, capsys) -> None:
    if BAD.name not in STUDIES:
        STUDIES.add(BAD.name, BAD)
    out = tmp_path / "study"
    assert main(["--study", BAD.name, "--out", str(out), "--in-process"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "variant 'broken'" in err[0] and "model.head.implicitness" in err[0] and "Did you mean" in err[0]
    assert not out.exists()  # validated before anything ran


def test_an_unknown_study_is_one_line_with_the_closest(capsys) -> None:
    assert main(["--study", "papr", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --study 'papr': no such study (did you mean 'paper'?); studies: ")
    assert len(err.strip().splitlines()) == 1


def test_only_names_variants_and_shards_split_the_jobs(tmp_path: Path) -> None:
    study = STUDIES.get("implicit")
    jobs = plan_jobs(study, tmp_path, Budget(1, 64, 3))
    assert [(j.variant, j.seed) for j in jobs[:5]] == [
        ("head-off", 0), ("yolor", 0), ("nn", 0), ("mf", 0), ("head-off", 1)
    ]  # fmt: skip
    assert [j.config.train.seed for j in jobs if j.variant == "nn"] == [0, 1, 2]
    assert jobs[4].run_dir == tmp_path.resolve() / "runs" / "head-off" / "seed1"
    assert jobs[4].config.project == str(jobs[4].run_dir.parent) and jobs[4].config.name == "seed1"
    shards = [shard_jobs(jobs, (i, 3)) for i in range(3)]
    assert sorted(j.index for s in shards for j in s) == list(range(12))
    assert all(j.index % 3 == 1 for j in shards[1])
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "a/2", "1"):
        with pytest.raises(StudyError, match="--shard"):
            parse_shard(bad)
    assert {j.variant for j in plan_jobs(study, tmp_path, Budget(1, 64, 1), only=["nn"])} == {"nn"}
    with pytest.raises(StudyError, match="--only nope"):
        plan_jobs(study, tmp_path, Budget(1, 64, 1), only=["nope"])


def test_dry_run_prints_the_commands_and_runs_nothing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "study"
    argv = ["--study", "implicit", "--out", str(out), "--seeds", "2", "--dry-run", "--shard", "1/2"]
    assert main([*argv, "--only", "yolor", "head-off", "optim.lr0=0.001"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("2 of 4 runs")
    assert "unified train --config" in text and JOB_CONFIG in text and "unified val --weights" in text
    assert "optim.lr0=0.001" in text and "train.time_budget_min=0" in text
    assert not out.exists()


def test_the_docs_describe_every_built_in_study_and_variant() -> None:
    text = (REPO / "docs" / "ABLATION.md").read_text()
    for study, variant in BUILT_IN:
        assert f"**`{study}`**" in text, study
        assert f"`{variant}`" in text, f"{study}:{variant}"
    assert "## Results" in text and "--shard" in text


def test_the_subcommand_and_the_tool_are_one() -> None:
    assert COMMANDS["ablate"].module == "ablate" and COMMANDS["ablate"].tool == "ablate"
    assert load_tool("ablate").main is main


# ------------------------------------------------------------------------------------------ statistics


def test_mean_and_standard_deviation_on_hand_numbers() -> None:
    s = summarize([0.5, 0.6, 0.7, None, math.nan])  # an undefined metric is left out
    assert s.n == 3 and s.mean == pytest.approx(0.6) and s.std == pytest.approx(0.1)
    one = summarize([0.4])
    assert one.n == 1 and one.mean == 0.4 and math.isnan(one.std)


def test_paired_difference_and_t_interval_on_hand_numbers() -> None:
    reference = {0: 0.5, 1: 0.6, 2: 0.7}
    variant = {0: 0.6, 1: 0.8, 2: 0.7, 3: 0.9}  # seed 3 has no pair: left out
    d = paired_difference(variant, reference)
    # differences 0.1, 0.2, 0.0: mean 0.1, s = 0.1; t(0.975, 2) = 4.302653 (a t table's 4.303)
    half = 4.302652729911275 * 0.1 / math.sqrt(3)
    assert d.n == 3 and d.mean == pytest.approx(0.1) and d.std == pytest.approx(0.1)
    assert d.low == pytest.approx(0.1 - half) and d.high == pytest.approx(0.1 + half)
    assert not d.excludes_zero
    tight = paired_difference({0: 0.60, 1: 0.71, 2: 0.80}, {0: 0.5, 1: 0.6, 2: 0.7})
    assert tight.excludes_zero and tight.low > 0
    assert paired_difference({0: 0.6}, {0: 0.5}).n == 1 and math.isnan(
        paired_difference({0: 0.6}, {0: 0.5}).low
    )
    wide = paired_difference(variant, reference, confidence=0.5)
    assert wide.high - wide.low < d.high - d.low


# -------------------------------------------------------------------------------------- resume, report

HAND = Study("test-hand", "hand numbers", "a", (Variant("a"), Variant("b")), epochs=1, img_size=64)


def _write_result(out: Path, variant: str, seed: int, ap50: float, mota: float | None) -> None:
    metrics = {"detect": {"AP50": ap50, "AP": ap50 / 2, "AP/circle": 0.1}, "jde": {"MOTA": mota, "IDs": 3}}
    payload = {"variant": variant, "seed": seed, "epochs": 1, "img_size": 64, "unseen_seed": 1}
    payload["metrics"] = {"unseen": metrics, "val": metrics}
    path = out / "runs" / variant / f"seed{seed}" / RESULT
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(payload))


def test_the_report_files_hold_the_hand_statistics(tmp_path: Path) -> None:
    for seed, (a, b) in enumerate([(0.5, 0.6), (0.6, 0.8), (0.7, 0.7)]):
        _write_result(tmp_path, "a", seed, a, 0.2)
        _write_result(tmp_path, "b", seed, b, None if seed == 0 else 0.3)
    (tmp_path / "runs" / "not-a-variant" / "seed0").mkdir(parents=True)  # ignored
    written = write_report(tmp_path, HAND)
    assert [p.name for p in written] == ["ablation.csv", "ablation-runs.csv", "ablation.md", "ablation.png"]
    assert all(p.stat().st_size > 0 for p in written)
    rows = {(r["split"], r["variant"], r["task"], r["metric"]): r for r in csv.DictReader(written[0].open())}
    b = rows[("unseen", "b", "detect", "AP50")]
    assert float(b["mean"]) == pytest.approx(0.7) and float(b["std"]) == pytest.approx(0.1)
    half = 4.302652729911275 * 0.1 / math.sqrt(3)
    assert float(b["diff_mean"]) == pytest.approx(0.1) and float(b["ci_low"]) == pytest.approx(0.1 - half)
    assert b["reference"] == "a" and b["diff_n"] == "3"
    assert rows[("unseen", "a", "detect", "AP50")]["diff_mean"] == ""  # the reference itself
    mota = rows[("unseen", "b", "jde", "MOTA")]  # seed 0 undefined: two values, two pairs
    assert mota["n"] == "2" and float(mota["diff_mean"]) == pytest.approx(0.1) and mota["diff_n"] == "2"
    assert ("unseen", "a", "detect", "AP/circle") not in rows  # per-class breakdowns stay in metrics.json
    text = written[2].read_text()
    assert "0.700 ± 0.100" in text and "+0.100 [" in text and "## On the validation split of a world" in text
    assert "detect AP50-95" in text  # COCO's AP named for people
    runs = list(csv.DictReader(written[1].open()))
    assert len(runs) == 2 * 2 * 3 * 4  # splits x variants x seeds x scalar metrics


def test_the_report_of_a_study_with_nothing_finished(tmp_path: Path) -> None:
    written = write_report(tmp_path, HAND)
    assert "No run of this study has finished yet" in (tmp_path / "ablation.md").read_text()
    assert [p.name for p in written] == ["ablation.csv", "ablation-runs.csv", "ablation.md"]


class FakeLauncher:
    """Stands for ``unified train`` / ``unified val``: records the calls and writes what they would."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    def __call__(self, command: str, argv: list[str]) -> int:
        self.calls.append((command, list(argv)))
        if command == "train":
            run_dir = Path(argv[1]).parent if argv[0] == "--config" else Path(argv[1])
            (run_dir / "weights").mkdir(parents=True, exist_ok=True)
            (run_dir / "weights" / "last.pt").write_bytes(b"")
            (run_dir / "metrics.json").write_text(json.dumps({"detect": {"AP50": 0.5}}))
        else:
            out = Path(argv[argv.index("--out") + 1])
            out.mkdir(parents=True, exist_ok=True)
            (out / "metrics.json").write_text(json.dumps({"detect": {"AP50": 0.4}}))
        return 0


def test_resume_skips_finished_runs_and_continues_the_others(tmp_path: Path) -> None:
    jobs = plan_jobs(HAND, tmp_path, Budget(1, 64, 2), base="synthetic")
    world = UnseenWorld(1, tmp_path / "world" / "dataset.yaml")
    finished, partial, unstarted, unevaluated = jobs
    _write_result(tmp_path, finished.variant, finished.seed, 0.5, 0.2)
    (partial.run_dir / "weights").mkdir(parents=True)
    (partial.run_dir / "weights" / "last.pt").write_bytes(b"")
    unstarted.run_dir.mkdir(parents=True)
    (unstarted.run_dir / "config.yaml").write_text("killed before its first checkpoint")
    FakeLauncher()("train", ["--config", str(unevaluated.run_dir / JOB_CONFIG)])

    launcher = FakeLauncher()
    outcomes = [run_job(job, launcher, world) for job in jobs]
    assert [o.status for o in outcomes] == ["done", "ran", "ran", "ran"]
    commands = [(c, a[:2]) for c, a in launcher.calls]
    assert commands == [
        ("train", ["--resume", str(partial.run_dir)]),
        ("val", ["--weights", str(partial.run_dir / "weights" / "last.pt")]),
        ("train", ["--config", str(unstarted.run_dir / JOB_CONFIG)]),
        ("val", ["--weights", str(unstarted.run_dir / "weights" / "last.pt")]),
        ("val", ["--weights", str(unevaluated.run_dir / "weights" / "last.pt")]),
    ]
    assert not (unstarted.run_dir / "config.yaml").exists()  # the killed run's folder was started afresh
    written = yaml.safe_load((unstarted.run_dir / JOB_CONFIG).read_text())
    assert written["train"]["seed"] == unstarted.seed and written["train"]["time_budget_min"] == 0
    result = json.loads((unevaluated.run_dir / RESULT).read_text())
    assert result["metrics"] == {"val": {"detect": {"AP50": 0.5}}, "unseen": {"detect": {"AP50": 0.4}}}
    again = FakeLauncher()
    assert [run_job(job, again, world).status for job in jobs] == ["done"] * 4 and not again.calls


def test_a_failed_run_is_reported_and_retried_next_time(tmp_path: Path) -> None:
    [job] = plan_jobs(HAND, tmp_path, Budget(1, 64, 1), only=["a"], base="synthetic")
    outcome = run_job(job, lambda command, argv: 1, None)
    assert outcome.status == "failed" and "training exited with 1" in outcome.message
    assert not (job.run_dir / RESULT).exists()
    assert run_job(job, lambda command, argv: 130, None).status == "interrupted"


def test_a_study_folder_refuses_another_budget_or_a_changed_variant(tmp_path: Path) -> None:
    check_study_folder(tmp_path, HAND, Budget(1, 64, 2), 1, ["a", "b"])
    check_study_folder(tmp_path, HAND, Budget(1, 64, 5), 1, ["a"])  # more seeds: the same runs, more of them
    with pytest.raises(StudyError, match="epochs 1, img 64"):
        check_study_folder(tmp_path, HAND, Budget(2, 64, 2), 1, ["a"])
    changed = dataclasses.replace(HAND, variants=(Variant("a", ("optim.lr0=0.1",)), Variant("b")))
    with pytest.raises(StudyError, match="variant 'a' changed"):
        check_study_folder(tmp_path, changed, Budget(1, 64, 2), 1, ["a"])
    assert json.loads((tmp_path / STUDY_RECORD).read_text())["variants"] == {"a": [], "b": []}


def test_a_study_folder_refuses_a_changed_base_experiment(tmp_path: Path) -> None:
    """Editing the base experiment between starts changes what a variant resolves to while its overrides
    stay the same: a resume must not mix runs of both; another device or checkout path is no change."""
    jobs = plan_jobs(HAND, tmp_path, Budget(1, 64, 1), base="synthetic")
    configs = {j.variant: comparable_config(j) for j in jobs}
    check_study_folder(tmp_path, HAND, Budget(1, 64, 1), 1, ["a", "b"], configs=configs)
    moved = [
        dataclasses.replace(j, config=dataclasses.replace(
            j.config, data="/elsewhere/dataset.yaml", train=dataclasses.replace(j.config.train, device="0")
        ))
        for j in jobs
    ]
    check_study_folder(tmp_path, HAND, Budget(1, 64, 1), 1, ["a"], configs={"a": comparable_config(moved[0])})
    edited = plan_jobs(HAND, tmp_path, Budget(1, 64, 1), base="synthetic", extra=["optim.lr0=0.5"])
    with pytest.raises(StudyError, match=r"variant 'a' resolves to another experiment .*optim.lr0: .* -> 0.5"):
        check_study_folder(tmp_path, HAND, Budget(1, 64, 1), 1, ["a"], configs={"a": comparable_config(edited[0])})


# ----------------------------------------------------------------------------------------- end to end

#: The switches the tiny study turns: the detection head's implicit knowledge off and on.
TINY = Study(
    "test-tiny",
    "two variants of a tiny run",
    "plain",
    (Variant("plain", ("model.head.implicit=false",)), Variant("yolor", ("model.head.implicit=true",))),
    epochs=1,
    img_size=64,
)


def _tiny_base(tmp_path: Path) -> Path:
    train = {"batch_size": 4, "workers": 0, "device": "cpu", "precision": "fp32", "cache_images": False}
    if "autoanchor" in {f.name for f in dataclasses.fields(TrainConfig)}:
        train["autoanchor"] = False  # the k-means fit is not what this test is about
    base = {
        "model": "yolor-tiny",
        "tasks": ["detect", "jdc"],
        "synthetic": {
            "out": str(tmp_path / "world"),
            "images": 8,
            "val_images": 4,
            "sequences": 0,
            "val_sequences": 0,
            "frames": 1,
            "size": 64,
            "seed": 3,
        },  # fmt: skip
        "optim": {"warmup_epochs": 0},
        "train": train,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


@pytest.mark.slow
def test_a_tiny_study_end_to_end(tmp_path: Path, capsys) -> None:
    if TINY.name not in STUDIES:
        STUDIES.add(TINY.name, TINY)
    out = tmp_path / "study"
    argv = ["--study", TINY.name, "--base", str(_tiny_base(tmp_path)), "--out", str(out), "--seeds", "2"]
    assert main([*argv, "--in-process"]) == 0
    printed = capsys.readouterr().out
    assert "[4/4] yolor seed 1" in printed
    for variant in ("plain", "yolor"):
        for seed in (0, 1):
            result = json.loads((out / "runs" / variant / f"seed{seed}" / RESULT).read_text())
            assert (
                set(result["metrics"]) == {"val", "unseen"}
                and "AP50" in result["metrics"]["unseen"]["detect"]
            )
    assert (out / "unseen-world-seed4" / "dataset.yaml").is_file()  # the training world's seed + 1
    rows = list(csv.DictReader((out / "ablation.csv").open()))
    yolor = [r for r in rows if r["variant"] == "yolor" and r["metric"] == "AP50" and r["split"] == "unseen"]
    assert yolor and yolor[0]["n"] == "2" and yolor[0]["diff_n"] == "2" and yolor[0]["reference"] == "plain"
    assert (out / "ablation.png").stat().st_size > 0 and "| plain | 2 |" in (out / "ablation.md").read_text()
    assert main([*argv, "--in-process"]) == 0  # resumed: every run has finished, nothing trains
    assert capsys.readouterr().out.count("finished before, skipped") == 4
    assert main([*argv, "--report-only"]) == 0
