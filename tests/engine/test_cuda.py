"""The CUDA path: tensors made on the right device, fp16 AMP with every balancer, pinned batches, NCCL with
SyncBN. Marked ``cuda``: skipped without a GPU (tests/conftest.py); ``tools/gpu_check.sh`` runs them.

Untested until a GPU runs them (docs/PERFORMANCE.md): written on a machine without one.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
from torch import nn

from tests.conftest import make_batch
from unified.config import load_config
from unified.engine.balancers import build_balancer
from unified.engine.evaluate import predict
from unified.engine.experiment import ExperimentConfig
from unified.engine.trainer import Trainer
from unified.model import build_model

pytestmark = pytest.mark.cuda

CUDA = torch.device("cuda", 0)


def test_eval_forward_and_post_processing_on_the_gpu_match_the_cpu(tiny_model_cfg, tiny_info):
    torch.manual_seed(0)
    model = build_model(tiny_model_cfg, tasks=["detect", "jdc", "jde"], info=tiny_info).eval()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    meta = [{"image_id": i, "orig_shape": (64, 64), "ratio": 1.0, "pad": (0, 0)} for i in range(2)]
    with torch.no_grad():
        cpu = model(images)
        gpu_model = model.to(CUDA)
        gpu = gpu_model(images.to(CUDA))
        predictions = predict(gpu_model, images.to(CUDA), meta)
    torch.testing.assert_close(gpu["detect"]["decoded"].cpu(), cpu["detect"]["decoded"], rtol=1e-3, atol=1e-3)
    assert predictions["detect"][0]["boxes"].device.type == "cuda"
    assert predictions["jde"][0]["embeddings"].shape[0] == len(predictions["detect"][0]["boxes"])


def _cuda_trainer(model_cfg, info, balancer: str) -> Trainer:
    cfg = load_config(
        ExperimentConfig,
        data={
            "model": model_cfg,
            "tasks": ["detect", "jdc", "jde"],
            "optim": {"lr0": 0.01, "warmup_epochs": 0.0, "ema": False, "optimizer": "sgd"},
            "train": {"epochs": 1, "batch_size": 4, "precision": "auto", "device": "0"},
        },
    )
    torch.manual_seed(0)
    model = build_model(cfg.model, tasks=cfg.tasks, info=info)
    return Trainer(cfg, model, build_balancer(balancer, list(model.tasks), {}, {}), [], CUDA)


@pytest.mark.parametrize("balancer", ["fixed", "uncertainty", "dwa", "gradnorm", "pcgrad", "rlw"])
def test_fp16_amp_trains_with_every_balancer(tiny_model_cfg, tiny_info, balancer):
    trainer = _cuda_trainer(tiny_model_cfg, tiny_info, balancer)
    assert trainer.autocast_dtype is torch.float16 and trainer.scaler.is_enabled()  # auto on CUDA
    before = [p.detach().clone() for p in trainer.model.parameters()]
    for seed in range(12):  # the scaler may overflow a few times while it lowers its scale
        trainer.run_step(make_batch(tiny_info, batch=4, size=64, seed=seed))
        trainer.state.iteration += 1
    assert trainer.state.optimizer_steps >= 1 and trainer.state.nonfinite_in_row == 0
    moved = sum(float((p.detach() - b).abs().sum()) for p, b in zip(trainer.model.parameters(), before))
    assert moved > 0 and all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert all(torch.isfinite(p).all() for p in trainer.balancer.parameters())


def test_pinned_batches_reach_the_gpu_whole(tiny_world):
    from unified.data import MultiTaskDataset, batch_to_device, build_dataloader, load_dataset_yaml

    records, info = load_dataset_yaml(tiny_world, "train")
    loader = build_dataloader(
        MultiTaskDataset(records, 64, True, info=info), 4, num_workers=1, pin_memory=True
    )
    batch = next(iter(loader))
    moved = batch_to_device(batch, CUDA, torch.channels_last)
    torch.cuda.synchronize()
    assert moved["images"].device.type == "cuda"
    for name, value in moved.items():
        if isinstance(value, torch.Tensor):
            assert value.device.type == "cuda", name
    assert all(v.device.type == "cuda" for v in moved["label_mask"].values())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nccl_group_with_sync_bn_and_ddp_on_one_gpu(tiny_model_cfg, tiny_info):
    """One rank is enough for NCCL to run its collectives: SyncBN converted before the move to the GPU and
    before DDP (the order unified.engine.launch uses), a DDP step, an all-reduce."""
    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(_free_port())
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = build_model(tiny_model_cfg, tasks=["detect"], info=tiny_info)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model).to(CUDA)
        assert any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=[0])
        batch = make_batch(tiny_info, batch=2, size=64, seed=0)
        outputs = wrapped(batch["images"].to(CUDA))
        loss = sum(r.float().pow(2).mean() for r in outputs["detect"]["raw"])
        loss.backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
        value = torch.ones(1, device=CUDA)
        dist.all_reduce(value)
        assert float(value) == 1.0
    finally:
        dist.destroy_process_group()
