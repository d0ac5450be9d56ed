import math

import pytest
import torch
from torch import nn

from unified.engine.balancers import BALANCERS, DWABalancer, PCGradBalancer, build_balancer

TASK_NAMES = ["detect", "jdc", "jde"]


class Toy(nn.Module):
    """A shared trunk and one linear head per task."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.heads = nn.ModuleDict({t: nn.Linear(8, 1) for t in TASK_NAMES})

    def losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.relu(self.body(x))
        return {t: (head(h) - i).pow(2).mean() for i, (t, head) in enumerate(self.heads.items())}


@pytest.mark.parametrize("name", BALANCERS.names())
def test_every_balancer_combines_and_backpropagates(name):
    torch.manual_seed(0)
    model = Toy()
    balancer = build_balancer(name, TASK_NAMES, {"jdc": 2.0}, {})
    balancer.bind(list(model.body.parameters()), list(model.parameters()) + list(balancer.parameters()))
    params = list(model.parameters()) + list(balancer.parameters())
    optimizer = torch.optim.SGD(params, lr=0.01)
    for _ in range(3):
        losses = model.losses(torch.randn(16, 4))
        total = balancer(losses)
        assert total.ndim == 0 and torch.isfinite(total)
        optimizer.zero_grad()
        balancer.backward(total, losses)
        for p in model.parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all()
        optimizer.step()
        balancer.after_step()
    weights = balancer.current_weights()
    assert set(weights) == set(TASK_NAMES) and all(math.isfinite(w) for w in weights.values())
    balancer.epoch_end({t: 1.0 for t in TASK_NAMES})
    # Balancer state survives a state_dict round trip (checkpoints).
    clone = build_balancer(name, TASK_NAMES, {"jdc": 2.0}, {})
    clone.load_state_dict(balancer.state_dict())


def test_fixed_weights_and_unknown_task():
    balancer = build_balancer("fixed", TASK_NAMES, {"jde": 0.5}, {})
    losses = {t: torch.tensor(2.0) for t in TASK_NAMES}
    assert balancer(losses).item() == pytest.approx(2 + 2 + 1)
    with pytest.raises(ValueError, match="not enabled"):
        build_balancer("fixed", TASK_NAMES, {"seg": 1.0}, {})
    with pytest.raises(ValueError, match="bad option"):
        build_balancer("dwa", TASK_NAMES, {}, {"temprature": 2.0})


def test_uncertainty_log_variances_are_parameters_and_learn():
    balancer = build_balancer("uncertainty", ["a", "b"], {}, {})
    assert [n for n, _ in balancer.named_parameters()] == ["log_vars"]
    optimizer = torch.optim.SGD(balancer.parameters(), lr=0.1)
    for _ in range(200):
        optimizer.zero_grad()
        balancer({"a": torch.tensor(4.0), "b": torch.tensor(0.25)}).backward()
        optimizer.step()
    # The optimum of exp(-s)·L + s is s = ln L: the noisier task gets the smaller weight.
    assert balancer.log_vars.tolist() == pytest.approx([math.log(4.0), math.log(0.25)], abs=0.05)


def test_dwa_weights_follow_loss_ratios():
    balancer = DWABalancer(["a", "b"], temperature=1.0)
    balancer.epoch_end({"a": 1.0, "b": 1.0})
    assert balancer.current_weights() == {"a": 1.0, "b": 1.0}
    balancer.epoch_end({"a": 1.0, "b": 0.5})  # b improved faster → a gets more weight
    w = balancer.current_weights()
    assert w["a"] > w["b"] and w["a"] + w["b"] == pytest.approx(2.0)
    expected = 2 * math.exp(1.0) / (math.exp(1.0) + math.exp(0.5))
    assert w["a"] == pytest.approx(expected)


def test_gradnorm_weights_stay_normalised_and_favour_slow_task():
    torch.manual_seed(0)
    model = Toy()
    balancer = build_balancer("gradnorm", TASK_NAMES, {}, {"alpha": 1.5})
    balancer.bind(list(model.body.parameters()), list(model.parameters()))
    optimizer = torch.optim.SGD(list(model.parameters()) + list(balancer.parameters()), lr=0.02)
    for _ in range(30):
        losses = model.losses(torch.randn(32, 4))
        optimizer.zero_grad()
        balancer.backward(balancer(losses), losses)
        assert balancer.task_weights.grad is not None
        optimizer.step()
        balancer.after_step()
    assert sum(balancer.current_weights().values()) == pytest.approx(3.0, rel=1e-5)


def test_pcgrad_projects_conflicting_gradients():
    w = nn.Parameter(torch.zeros(2))
    balancer = PCGradBalancer(["a", "b"])
    balancer.bind([w], [w])
    # Gradients g_a = (1, 0) and g_b = (-1, 1) conflict (dot < 0).
    losses = {"a": (w * torch.tensor([1.0, 0.0])).sum(), "b": (w * torch.tensor([-1.0, 1.0])).sum()}
    balancer.backward(balancer(losses), losses)
    g_a, g_b = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    # Each projected gradient is orthogonal to the other task's: the sum cannot hurt either task.
    assert torch.dot(w.grad, g_a) >= -1e-6 and torch.dot(w.grad, g_b) >= -1e-6
    assert torch.allclose(w.grad, torch.tensor([0.5, 1.5]))
