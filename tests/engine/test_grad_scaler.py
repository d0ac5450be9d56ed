"""fp16 AMP's GradScaler with the balancers that take per-task gradients, and its overflow search.

CUDA is not needed: the trainer's scaler is swapped for a CPU GradScaler, which scales, unscales and
searches its scale exactly as the CUDA one does (the fp16 autocast itself is what only a GPU runs).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from tests.conftest import make_batch
from tests.engine.test_training import _one_task_trainer

OPTIM = {"optimizer": "sgd", "nominal_batch_size": 4}


@pytest.mark.parametrize("balancer", ["pcgrad", "gradnorm", "fixed"])
def test_a_loss_scaler_does_not_change_the_update(tiny_model_cfg, tiny_info, balancer):
    """PCGrad back-propagates the task losses itself and GradNorm takes gradients in its forward: both must
    see the losses scaled as the total is, or unscale_ divides unscaled gradients by the scale."""
    plain = _one_task_trainer(tiny_model_cfg, tiny_info, OPTIM, balancer)
    scaled = _one_task_trainer(tiny_model_cfg, tiny_info, OPTIM, balancer)
    scaled.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    for seed in (1, 2):
        batch = make_batch(tiny_info, batch=4, size=64, seed=seed)
        plain.run_step(batch)
        scaled.run_step(batch)
    assert plain.state.optimizer_steps == scaled.state.optimizer_steps == 2
    for (name, a), b in zip(plain.model.named_parameters(), scaled.model.parameters()):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-4, atol=1e-6, msg=f"{name} differs")
    for (name, a), b in zip(plain.balancer.named_parameters(), scaled.balancer.parameters()):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-4, atol=1e-6, msg=f"{name} differs")


def test_overflow_while_the_scaler_searches_its_scale_is_no_divergence(tiny_model_cfg, tiny_info):
    trainer = _one_task_trainer(tiny_model_cfg, tiny_info, OPTIM)
    trainer.cfg.train.max_nonfinite_steps = 1  # one counted non-finite step would stop the run
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)  # the scaled gradients overflow
    batch = make_batch(tiny_info, batch=4, size=64, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "non-finite gradient" warning either
        trainer.run_step(batch)
    assert trainer.state.skipped_steps == 1 and trainer.state.nonfinite_in_row == 0
    assert trainer.scaler.get_scale() == 2.0**126  # halved, as the search goes
