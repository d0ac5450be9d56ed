"""The trainer end to end: exact resume, DDP equivalence, plugins through the CLI, start-up errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from tests.conftest import REPO, TINY_MODEL, make_batch
from unified.checkpoint import load_safe
from unified.engine.balancers import build_balancer
from unified.engine.experiment import load_experiment
from unified.engine.hooks import Hook
from unified.engine.launch import run_training
from unified.engine.trainer import Trainer
from unified.model import build_model


def experiment(tmp_path, world, **over):
    model_path = tmp_path / "model.yaml"
    model_path.write_text(yaml.safe_dump(TINY_MODEL))
    overrides = [
        f"model={model_path}",
        f"data={world}",
        "tasks=[detect, jdc, jde]",
        "train.epochs=3",
        "train.batch_size=4",
        "train.img_size=96",
        "train.workers=0",
        "train.device=cpu",
        "train.deterministic=true",
        "train.precision=fp32",
        "optim.warmup_epochs=1",
        "eval.interval=0",
        f"project={tmp_path / 'runs'}",
    ] + [f"{k}={v}" for k, v in over.items()]
    return load_experiment(None, overrides)


class StopAfter(Hook):
    """Stops the run at the end of an epoch, as a kill between epochs would."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def after_step(self, trainer) -> None:
        if trainer.state.end_of_epoch and trainer.state.epoch + 1 == self.epochs:
            trainer.state.stop = True


@pytest.mark.slow
def test_resume_continues_to_the_same_parameters(tmp_path, tiny_world):
    cfg = experiment(tmp_path, tiny_world, **{"balancer.name": "dwa", "name": "full"})
    full_dir, _ = run_training(cfg, progress=False)
    cut = experiment(tmp_path, tiny_world, **{"balancer.name": "dwa", "name": "cut"})
    cut_dir, _ = run_training(cut, progress=False, extra_hooks=[StopAfter(2)])
    assert load_safe(cut_dir / "weights" / "last.pt")["epoch"] == 2
    run_training(cut, resume_from=cut_dir / "weights" / "last.pt", progress=False)
    a = load_safe(full_dir / "weights" / "last.pt")
    b = load_safe(cut_dir / "weights" / "last.pt")
    assert a["epoch"] == b["epoch"] == 3
    for key in ("model", "balancer"):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), f"{key}.{name} differs after resume"
    for name, value in a["ema"]["model"].items():
        assert torch.equal(value, b["ema"]["model"][name]), f"ema.{name} differs after resume"
    assert (cut_dir / "metrics.json").exists() and json.loads((cut_dir / "metrics.json").read_text())


def _ddp_worker(rank: int, world: int, port: int, cfg, result_path: str, info) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        params = _train_steps(cfg, info, world_size=world, rank=rank)
        if rank == 0:
            torch.save(params, result_path)
    finally:
        dist.destroy_process_group()


def _train_steps(cfg, info, world_size: int = 1, rank: int = 0) -> dict[str, torch.Tensor]:
    from unified.distributed import DistInfo

    torch.manual_seed(0)
    model = build_model(cfg.model, tasks=cfg.tasks, info=info)
    balancer = build_balancer(cfg.balancer.name, list(model.tasks), {}, {})
    # The same two images on every rank; one process sees them `world_size` times in one batch.
    base = make_batch(info, batch=2, size=64, seed=1)
    batches = []
    for step in range(3):
        b = make_batch(info, batch=2, size=64, seed=10 + step)
        if world_size == 1 and cfg.train.batch_size == 4:
            t2 = b["boxes"].clone()
            t2[:, 0] += 2
            # Every kind's entry twice (per-instance rows and per-image rows alike), boxes renumbered.
            doubled = {k: torch.cat([v, v]) for k, v in b.items() if isinstance(v, torch.Tensor)}
            b = {
                **doubled,
                "boxes": torch.cat([b["boxes"], t2]),
                "label_mask": {k: torch.cat([v, v]) for k, v in b["label_mask"].items()},
                "meta": b["meta"] * 2,
            }
        batches.append(b)
    del base

    class Loader(list):
        sampler = None
        generator = None

    trainer = Trainer(
        cfg, model, balancer, Loader(batches), torch.device("cpu"), DistInfo(rank, rank, world_size)
    )
    trainer.train()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_combined_batch(tmp_path, tiny_model_cfg, tiny_info):
    base = {
        "model": tiny_model_cfg,
        "tasks": ["detect", "jdc", "jde"],
        "optim": {"warmup_epochs": 0.0, "ema": False, "nominal_batch_size": 4},
        "train": {"epochs": 1, "batch_size": 4, "precision": "fp32", "device": "cpu"},
    }
    from unified.config import load_config
    from unified.engine.experiment import ExperimentConfig

    cfg = load_config(ExperimentConfig, data=base)
    single = _train_steps(cfg, tiny_info)
    result = tmp_path / "ddp.pt"
    port = 29500 + os.getpid() % 1000
    mp.spawn(_ddp_worker, args=(2, port, cfg, str(result), tiny_info), nprocs=2, join=True)
    ddp = torch.load(result, weights_only=True)
    for name, value in single.items():
        if name.endswith("running_var"):
            # BN's running variance is unbiased (n / (n - 1)) over each process's own n: it differs by
            # design between batch 2 per rank and batch 4, and is not used by training forward passes.
            continue
        if value.dtype.is_floating_point:
            torch.testing.assert_close(ddp[name], value, rtol=1e-4, atol=1e-5, msg=f"{name} differs")
        else:
            assert torch.equal(ddp[name], value), name


def _cli(*args, cwd=REPO, timeout=600):
    return subprocess.run(
        [sys.executable, "tools/train_multitask.py", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_example_plugin_task_trains_through_the_cli(tmp_path, tiny_world):
    model_path = tmp_path / "model.yaml"
    model_path.write_text(yaml.safe_dump(TINY_MODEL))
    result = _cli(
        "--data", str(tiny_world), "--model", str(model_path), "--tasks", "count", "--epochs", "1",
        "--batch-size", "4", "--img", "96", "--workers", "0", "--device", "cpu",
        "--project", str(tmp_path / "runs"), "--name", "plugin", "--no-progress",
        "plugins=[tests.plugins.counting_task]",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "runs" / "plugin" / "metrics.json").read_text())
    assert set(metrics) == {"count"} and metrics["count"]["MAE"] >= 0


def test_startup_errors_are_clear_and_early(tmp_path, tiny_world):
    result = _cli("--data", str(tiny_world), "--tasks", "detect,jdcc", "--project", str(tmp_path))
    assert result.returncode == 2
    assert "unknown task 'jdcc'" in result.stderr and "Did you mean 'jdc'" in result.stderr
    assert "Traceback" not in result.stderr
    result = _cli("--data", str(tiny_world), "--project", str(tmp_path), "train.epohcs=3")
    assert result.returncode == 2 and "Did you mean 'epochs'" in result.stderr
    only_boxes = tmp_path / "boxes.yaml"
    spec = yaml.safe_load(tiny_world.read_text())
    spec["parts"] = [dict(p, label_kinds=["boxes"]) for p in spec["parts"]]
    for part in spec["parts"]:
        for split in ("train", "val"):
            loc = part.get(split)
            if isinstance(loc, dict):
                part[split] = {k: str(tiny_world.parent / v) for k, v in loc.items()}
            elif isinstance(loc, str):
                part[split] = str(tiny_world.parent / loc)
    only_boxes.write_text(yaml.safe_dump(spec))
    result = _cli("--data", str(tiny_world), "--tasks", "detect", "--project", str(tmp_path))
    assert result.returncode == 2 and "key 'model': no model given" in result.stderr
    model = "configs/models/yolor-tiny.yaml"
    result = _cli("--data", str(only_boxes), "--model", model, "--tasks", "jde", "--project", str(tmp_path))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "task 'jde' needs ['identities'] labels" in result.stderr


def _one_task_trainer(model_cfg, info, optim: dict, balancer: str = "fixed", batch_size: int = 4) -> Trainer:
    from unified.config import load_config
    from unified.engine.experiment import ExperimentConfig

    cfg = load_config(
        ExperimentConfig,
        data={
            "model": model_cfg,
            "tasks": ["detect"],
            "optim": {"lr0": 0.01, "warmup_epochs": 0.0, "ema": False, **optim},
            "train": {"epochs": 1, "batch_size": batch_size, "precision": "fp32", "device": "cpu"},
        },
    )
    torch.manual_seed(0)
    model = build_model(cfg.model, tasks=cfg.tasks, info=info)
    return Trainer(cfg, model, build_balancer(balancer, ["detect"], {}, {}), [], torch.device("cpu"))


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_the_optimiser_is_fused_and_updates_as_the_per_tensor_loop(tiny_model_cfg, tiny_info, name):
    fused = _one_task_trainer(tiny_model_cfg, tiny_info, {"optimizer": name}).optimizer
    assert all(group["fused"] for group in fused.param_groups)
    # The same groups and hyper-parameters through the default per-tensor implementation.
    reference_params = [
        [p.detach().clone().requires_grad_() for p in g["params"]] for g in fused.param_groups
    ]
    groups = [
        {**{k: v for k, v in g.items() if k not in ("params", "fused", "foreach")}, "params": ps}
        for g, ps in zip(fused.param_groups, reference_params)
    ]
    reference = type(fused)(groups, foreach=False)
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        for group, ref_group in zip(fused.param_groups, reference_params):
            for p, q in zip(group["params"], ref_group):
                # In the parameter's layout, as autograd makes gradients (channels-last weights here).
                p.grad = torch.empty_like(p).copy_(torch.randn(p.shape, generator=generator))
                q.grad = p.grad.clone()
        fused.step()
        reference.step()
    for group, ref_group in zip(fused.param_groups, reference_params):
        for p, q in zip(group["params"], ref_group):
            torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)


def test_pcgrad_with_one_task_steps_as_plain_backward_over_accumulated_micro_batches(
    tiny_model_cfg, tiny_info
):
    """PCGrad sets gradients itself: they must accumulate over micro-batches (nominal batch 4 = 2 x 2) and
    reach the fused optimiser in the channels-last layout of the weights, or the update is silently wrong.
    With one task there is nothing to project, so its update is plain backward's."""
    optim = {"optimizer": "sgd", "nominal_batch_size": 4}
    plain = _one_task_trainer(tiny_model_cfg, tiny_info, optim, batch_size=2)
    pcgrad = _one_task_trainer(tiny_model_cfg, tiny_info, optim, "pcgrad", batch_size=2)
    assert plain.accumulate == pcgrad.accumulate == 2
    assert plain.cfg.train.channels_last
    for seed in (1, 2, 3, 4):
        batch = make_batch(tiny_info, batch=2, size=64, seed=seed)
        plain.run_step(batch)
        pcgrad.run_step(batch)
        plain.state.iteration += 1
        pcgrad.state.iteration += 1
    assert plain.state.optimizer_steps == pcgrad.state.optimizer_steps == 2
    for (name, a), b in zip(plain.model.named_parameters(), pcgrad.model.parameters()):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-4, atol=1e-6, msg=f"{name} differs")


def test_gradients_set_by_hand_in_another_layout_still_update_the_right_elements(tiny_model_cfg, tiny_info):
    """A balancer plugin that assigns contiguous gradients to channels-last weights: the trainer puts them
    in the weights' layout before the fused optimiser, which would otherwise read them scrambled."""
    from unified.engine.balancers import Balancer

    class ContiguousGradients(Balancer):
        def backward(self, total, task_losses):
            grads = torch.autograd.grad(total, self._all_params)
            for p, g in zip(self._all_params, grads):
                p.grad = g.contiguous()

    optim = {"optimizer": "sgd", "nominal_batch_size": 4}
    plain = _one_task_trainer(tiny_model_cfg, tiny_info, optim)
    by_hand = _one_task_trainer(tiny_model_cfg, tiny_info, optim)
    by_hand.balancer = ContiguousGradients(["detect"])
    by_hand.balancer.bind([], list(by_hand.model.parameters()))
    assert any(not p.is_contiguous() for p in by_hand.model.parameters()), (
        "the tiny model should have channels-last weights for this test to mean anything"
    )
    batch = make_batch(tiny_info, batch=4, size=64, seed=1)
    plain.run_step(batch)
    by_hand.run_step(batch)
    assert plain.state.optimizer_steps == by_hand.state.optimizer_steps == 1
    for (name, a), b in zip(plain.model.named_parameters(), by_hand.model.parameters()):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-5, atol=1e-7, msg=f"{name} differs")
