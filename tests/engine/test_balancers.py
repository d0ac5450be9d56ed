import dataclasses
import math

import pytest
import torch
from torch import nn

from unified.config import ConfigError, dump_yaml, load_config
from unified.engine.balancers import (
    BALANCERS,
    DWABalancer,
    DWAOptions,
    PCGradBalancer,
    balancer_options,
    build_balancer,
)
from unified.engine.experiment import ExperimentConfig, load_experiment

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
    with pytest.raises(ConfigError, match=r"'balancer.weights'.*not enabled: \['seg'\]"):
        build_balancer("fixed", TASK_NAMES, {"seg": 1.0}, {})


@pytest.mark.parametrize("name", BALANCERS.names())
def test_every_balancer_has_an_options_dataclass_and_refuses_unknown_keys(name):
    cls = BALANCERS.get(name)
    assert dataclasses.is_dataclass(cls.options_class)
    assert isinstance(build_balancer(name, TASK_NAMES).options, cls.options_class)
    with pytest.raises(ConfigError, match=r"key 'balancer.options.bogus': unknown key"):
        build_balancer(name, TASK_NAMES, {}, {"bogus": 1})


def test_bad_options_name_the_key():
    with pytest.raises(
        ConfigError, match=r"'balancer.options.temprature': unknown key. Did you mean 'temperature'"
    ):
        build_balancer("dwa", TASK_NAMES, {}, {"temprature": 2.0})
    with pytest.raises(ConfigError, match=r"'balancer.options.temperature': expected a number"):
        build_balancer("dwa", TASK_NAMES, {}, {"temperature": "hot"})
    with pytest.raises(ConfigError, match=r"'balancer.options.temperature': must be > 0"):
        build_balancer("dwa", TASK_NAMES, {}, {"temperature": 0})
    with pytest.raises(ConfigError, match=r"'balancer.options.alpha': must be >= 0"):
        build_balancer("gradnorm", TASK_NAMES, {}, {"alpha": -1.0})
    with pytest.raises(ConfigError, match=r"'balancer.options.seed': expected an integer"):
        build_balancer("pcgrad", TASK_NAMES, {}, {"seed": 1.5})
    with pytest.raises(ConfigError, match=r"experiment.yaml: key 'balancer.options.x'.*takes no keys"):
        build_balancer("fixed", TASK_NAMES, {}, {"x": 1}, source="experiment.yaml")
    with pytest.raises(TypeError, match="takes a DWAOptions"):
        DWABalancer(TASK_NAMES, options={"temperature": 2.0})


def test_options_written_in_yaml_reach_the_balancer_and_survive_a_dump(tmp_path):
    """The YAML users write (``options: {temperature: 3}``) stays a plain mapping in the experiment, so
    the resolved config dumps and reloads (resume) as it was written."""
    path = tmp_path / "experiment.yaml"
    path.write_text("balancer: {name: dwa, options: {temperature: 3}}\n")
    cfg = load_experiment(path, ["balancer.weights.detect=0.5"])
    balancer = build_balancer(cfg.balancer.name, ["detect"], cfg.balancer.weights, cfg.balancer.options)
    assert balancer.options == DWAOptions(temperature=3.0) and isinstance(balancer.options.temperature, float)
    assert balancer.current_weights() == {"detect": 0.5}
    (tmp_path / "resolved.yaml").write_text(dump_yaml(cfg))
    again = load_config(ExperimentConfig, tmp_path / "resolved.yaml")
    assert again == cfg
    assert balancer_options(again.balancer.name, again.balancer.options) == balancer.options
    # An options instance passes through unchanged.
    assert balancer_options("dwa", balancer.options) is balancer.options


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
    balancer = DWABalancer(["a", "b"], options=DWAOptions(temperature=1.0))
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
