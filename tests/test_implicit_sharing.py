"""Shared implicit knowledge (``implicit.sharing``), the heads' refinement ops and feature alignment."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch

from tests.conftest import TINY_MODEL
from unified.checkpoint import FORMAT, VERSION, save_atomic
from unified.config import ConfigError
from unified.engine.experiment import load_experiment
from unified.implicit import ImplicitBank, ImplicitConfig, ImplicitOp, LatentMF, LatentNN
from unified.model import build_model, load, model_meta
from unified.models import model_config_from_text

TASKS = ["detect", "jdc", "jde"]
OPTIONS = {"jde": {"embedding_dim": 8, "hidden": 0}}


def _model(info, form: str = "vector", sharing: str | None = None, tasks=TASKS, seed: int = 0, **head):
    cfg = copy.deepcopy(TINY_MODEL)
    cfg["head"] = {"implicit_form": form, **head}
    torch.manual_seed(seed)
    implicit = {"sharing": sharing} if sharing else None
    options = {k: v for k, v in OPTIONS.items() if k in tasks}
    return build_model(cfg, tasks=tasks, info=info, task_options=options, implicit=implicit)


def _bank_keys(model) -> list[str]:
    return [k for k in model.state_dict() if k.startswith("bank.")]


def test_an_experiment_shares_by_default_for_several_tasks_only(tiny_info) -> None:
    def sharing(tasks: list[str], implicit) -> str:
        return build_model(TINY_MODEL, tasks=tasks, info=tiny_info, implicit=implicit).implicit.sharing

    experiment = load_experiment(None).implicit
    assert experiment.sharing is None
    assert sharing(["detect"], experiment) == "none"
    assert sharing(["detect", "jdc"], experiment) == "latent"
    assert sharing(["jdc"], experiment) == "latent"  # jdc brings detect: two tasks
    assert sharing(["detect", "jdc"], None) == "none"  # built without an experiment: as it always was


def test_none_gives_every_consumer_its_own_tensors_as_before(tiny_info) -> None:
    model = _model(tiny_info, "nn", "none")
    keys = _bank_keys(model)
    assert "bank.detect.ia.0.z" in keys and "bank.jde.im.1.z" in keys and not model.bank.aliases()
    summary = model.bank.summary()
    assert summary.consumers == summary.tensors and summary.latent_params == 0


def test_latent_nn_is_one_z_and_a_map_per_consumer(tiny_info) -> None:
    model = _model(tiny_info, "nn", "latent")
    keys = _bank_keys(model)
    assert [k for k in keys if k.endswith(".z")] == ["bank.latent.z"]
    consumers = model.bank.consumers()
    assert len(consumers) == len(model.bank.names())  # no consumer reads another's tensor
    for name in consumers:
        assert isinstance(model.bank.tensor(name), LatentNN)
        assert f"bank.{name}.weight" in keys and f"bank.{name}.bias" in keys
    assert model.state_dict()["bank.latent.z"].shape == (model.bank.nn_dim,)
    # Every head's output reaches z: one representation serves all tasks.
    model.train()
    out = model(torch.rand(2, 3, 64, 64))
    for task in TASKS:
        model.zero_grad()
        sum(t.float().sum() for t in _tensors(out[task])).backward(retain_graph=True)
        assert model.bank.latent.z.grad is not None and model.bank.latent.z.grad.abs().sum() > 0, task


def _tensors(value) -> list[torch.Tensor]:
    if torch.is_tensor(value):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else []
    return [t for v in items for t in _tensors(v)]


def test_latent_mf_is_atoms_per_width_and_coefficients_per_consumer(tiny_info) -> None:
    model = _model(tiny_info, "mf", "latent")
    keys = _bank_keys(model)
    atoms = [k for k in keys if k.startswith("bank.latent.atoms.")]
    widths = {model.bank.tensor(n).channels for n in model.bank.names()}
    assert sorted(atoms) == sorted(f"bank.latent.atoms.{c}" for c in widths)
    for name in model.bank.names():
        tensor = model.bank.tensor(name)
        assert isinstance(tensor, LatentMF) and f"bank.{name}.coefficients" in keys
        # g starts near the op's neutral value (1 for a multiply, 0 for an add)
        g = tensor.value().detach()
        assert (g - tensor.base).abs().mean() < 0.1


def test_alias_shares_adds_of_a_level_with_detect_and_keeps_explicit_aliases(tiny_info) -> None:
    model = _model(tiny_info, "vector", "alias")
    automatic = model.bank.automatic_aliases()
    assert automatic == {"jdc.align.0": "detect.ia.0", "jdc.align.1": "detect.ia.1",
                         "jde.ia.0": "detect.ia.0", "jde.ia.1": "detect.ia.1"}  # fmt: skip
    assert not any(".im." in k for k in automatic)  # multiplies scale each head's own outputs
    keys = _bank_keys(model)
    assert "bank.jdc.align.0.implicit" not in keys and "bank.detect.ia.0.implicit" in keys
    summary = model.bank.summary()
    assert summary.aliased_tensors == 2 and summary.tensors == summary.consumers - 4
    # vector latent behaves as alias
    assert _model(tiny_info, "vector", "latent").bank.automatic_aliases() == automatic
    # the explicit map works under every sharing and wins over the automatic aliases
    for sharing, auto in (("none", 0), ("alias", 2)):
        explicit = build_model(
            TINY_MODEL, tasks=TASKS, info=tiny_info, task_options=OPTIONS,
            implicit_share={"jdc.align.0": "jde.ia.0"}, implicit={"sharing": sharing},
        )  # fmt: skip
        assert explicit.bank.resolve("jdc.align.0") == explicit.bank.resolve("jde.ia.0") == "jde.ia.0"
        assert len(explicit.bank.automatic_aliases()) == auto


def test_alias_matches_channels_and_form(tiny_info) -> None:
    bank = ImplicitBank(sharing="alias")
    bank.get("detect.ia.0", 8, "add")
    assert bank.get("jdc.align.0", 8, "add").shared_name == "detect.ia.0"
    assert bank.get("jde.ia.0", 4, "add").shared_name == "jde.ia.0"  # other width: its own
    assert bank.get("jde.ia.1", 8, "add").shared_name == "jde.ia.1"  # other level: its own
    assert bank.get("pose.ia.0", 8, "add", "nn").shared_name == "pose.ia.0"  # other form: its own
    with pytest.raises(Exception, match="latent"):
        ImplicitBank(sharing="latent").get("latent.x", 4, "add", "nn")


@pytest.mark.parametrize("form", ["vector", "nn", "mf"])
@pytest.mark.parametrize("sharing", ["none", "alias", "latent"])
def test_folding_stays_exact(tiny_info, form: str, sharing: str) -> None:
    model = _model(tiny_info, form, sharing).eval()
    with torch.no_grad():
        for tensor in model.bank.modules():  # move g away from its init, so a wrong fold shows
            for p in tensor.parameters(recurse=False):
                p.add_(torch.randn_like(p) * 0.05)
        x = torch.rand(2, 3, 64, 64)
        before = model(x)
        fused = copy.deepcopy(model).fuse()
        after = fused(x)
    assert not any(isinstance(m, ImplicitOp) for m in fused.heads.modules())
    torch.testing.assert_close(after["detect"]["decoded"], before["detect"]["decoded"], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(after["jdc"]["scores"], before["jdc"]["scores"], rtol=1e-4, atol=1e-5)
    for a, b in zip(after["jde"]["embeddings"], before["jde"]["embeddings"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_the_latent_survives_deepcopy_and_state_dict_round_trips(tiny_info) -> None:
    model = _model(tiny_info, "nn", "latent")
    twin = copy.deepcopy(model)  # the EMA's copy
    with torch.no_grad():
        twin.bank.latent.z.add_(1.0)
    head = twin.bank.tensor("jdc.im")
    assert torch.allclose(head.value().flatten(), head.weight @ twin.bank.latent.z + head.bias)
    assert not torch.allclose(model.bank.tensor("jdc.im").value(), head.value())  # the copy has its own z
    other = _model(tiny_info, "nn", "latent", seed=1)
    other.load_state_dict(twin.state_dict())
    assert torch.equal(other.bank.tensor("detect.im.0").value(), twin.bank.tensor("detect.im.0").value())


@pytest.mark.parametrize("sharing", ["none", "alias", "latent"])
def test_checkpoints_record_the_sharing(tmp_path, tiny_info, sharing: str) -> None:
    model = _model(tiny_info, "mf", sharing)
    meta = model_meta(model, OPTIONS, {})
    assert meta["implicit"]["sharing"] == sharing
    path = tmp_path / "m.pt"
    save_atomic({"format": FORMAT, "version": VERSION, **meta, "model": model.state_dict()}, path)
    loaded = load(path)
    assert loaded.implicit.sharing == sharing and _bank_keys(loaded) == _bank_keys(model)


def test_a_checkpoint_without_the_record_loads_as_unshared(tmp_path, tiny_info) -> None:
    model = _model(tiny_info, "nn", "none")  # what every model was before sharing existed
    meta = model_meta(model, OPTIONS, {})
    del meta["implicit"]
    path = tmp_path / "old.pt"
    save_atomic({"format": FORMAT, "version": VERSION, **meta, "model": model.state_dict()}, path)
    assert load(path).implicit.sharing == "none"


def test_the_experiment_section_and_its_errors() -> None:
    assert load_experiment(None).implicit == ImplicitConfig()
    assert load_experiment("synthetic").implicit.sharing == "latent"
    assert load_experiment(None, ["implicit.sharing=alias", "implicit.nn_dim=4"]).implicit == ImplicitConfig(
        "alias", 4
    )
    with pytest.raises(ConfigError, match="implicit.sharing"):
        load_experiment(None, ["implicit.sharing=shared"])
    with pytest.raises(ConfigError, match="implicit.nn_dim"):
        load_experiment(None, ["implicit.nn_dim=0"])


# -- the heads' refinement ops and feature alignment (the paper's ablation rows) -------------------------
def _names(model) -> set[str]:
    return set(model.bank.consumers())


def test_refine_picks_the_add_or_the_multiply_in_every_head(tiny_info) -> None:
    both = _names(_model(tiny_info, sharing="none"))
    add = _names(_model(tiny_info, sharing="none", refine=["add"]))
    mul = _names(_model(tiny_info, sharing="none", refine=["mul"]))
    assert {"detect.ia.0", "jdc.align.1", "jdc.ia", "jde.ia.0"} <= add and not any(".im" in n for n in add)
    assert {"detect.im.0", "jdc.im", "jde.im.1"} <= mul and not any(".ia" in n or "align" in n for n in mul)
    assert add | mul == both
    assert _names(_model(tiny_info, sharing="none", refine=[])) == set()
    assert _names(_model(tiny_info, sharing="none", implicit=False)) == set()
    with pytest.raises(ConfigError, match="head.refine"):
        _model(tiny_info, refine=["add", "add"])


def test_each_task_turns_its_implicit_knowledge_on_or_off(tiny_info) -> None:
    torch.manual_seed(0)
    jdc_plain = build_model(
        TINY_MODEL, tasks=TASKS, info=tiny_info, task_options={**OPTIONS, "jdc": {"implicit": False}}
    )
    names = _names(jdc_plain)
    assert not any(n.startswith("jdc.") for n in names) and "detect.ia.0" in names and "jde.im.0" in names
    baseline = {**TINY_MODEL, "head": {"implicit": False}}
    ijde = build_model(
        baseline, tasks=TASKS, info=tiny_info, task_options={**OPTIONS, "jde": {"implicit": True}}
    )
    assert {n.split(".")[0] for n in _names(ijde)} == {"jde"}


def test_feature_alignment_adds_before_every_head_and_shares_the_latent(tiny_info) -> None:
    model = _model(tiny_info, "nn", "latent", feature_alignment=True)
    assert [op.name for op in model.align] == ["align.0", "align.1"]
    assert isinstance(model.bank.tensor("align.0"), LatentNN)
    baseline = _model(tiny_info, "vector", "none", implicit=False, feature_alignment=True)
    assert _names(baseline) == {"align.0", "align.1"}


@pytest.mark.parametrize(
    "tasks", [["detect"], ["detect", "jdc"], ["detect", "pose"], TASKS, ["detect", "segment"]]
)
def test_feature_alignment_folds_where_every_head_can_take_it(tiny_info, tasks) -> None:
    model = _model(tiny_info, "vector", "none", tasks=tasks, feature_alignment=True).eval()
    with torch.no_grad():
        for op in model.align:
            op.tensor.implicit.add_(torch.randn_like(op.tensor.implicit))
        x = torch.rand(2, 3, 64, 64)
        before = model(x)
        fused = copy.deepcopy(model).fuse()
        after = fused(x)
    folded = not any(isinstance(a, ImplicitOp) for a in fused.align)
    # jde's branch and segment's prototypes start with a zero-padded 3x3: not exact
    assert folded == ("jde" not in tasks and "segment" not in tasks)
    for task in tasks:
        key = {
            "detect": "decoded",
            "jdc": "scores",
            "jde": "embeddings",
            "pose": "decoded",
            "segment": "protos",
        }[task]
        a, b = after[task][key], before[task][key]
        for x_, y_ in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
            torch.testing.assert_close(x_, y_, rtol=1e-4, atol=1e-3)


def test_model_yaml_head_keys() -> None:
    text = "\n".join(
        [
            "anchors: [[10, 13, 16, 30, 33, 23]]",
            "backbone: [[-1, 1, Conv, [8, 3, 2]], [-1, 1, Conv, [8, 3, 2]], [-1, 1, Conv, [8, 3, 2]]]",
            "outputs: [2]",
            "head: {refine: [mul], feature_alignment: true}",
        ]
    )
    cfg = model_config_from_text(text)
    assert cfg.head.refine == ["mul"] and cfg.head.feature_alignment and cfg.head.refine_ops() == ("mul",)
    assert dataclasses.replace(cfg.head, implicit=False).refine_ops() == ()
    with pytest.raises(ConfigError, match="Did you mean 'mul'"):
        model_config_from_text(text.replace("[mul]", "[mull]"))


def test_info_reports_shared_and_per_consumer_parameters(capsys) -> None:
    from unified.commands.info import main

    assert (
        main(["yolor-tiny", "--tasks", "detect,jdc,jde", "--form", "nn", "--sharing", "latent", "--json"])
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["implicit"]["latent_params"] == 16 and data["implicit"]["sharing"] == "latent"
    assert data["implicit_params"] == data["implicit"]["latent_params"] + data["implicit"]["consumer_params"]
    assert data["tasks"] == TASKS
    assert main(["yolor-tiny", "--tasks", "detect,jdc,jde", "--sharing", "none"]) == 0
    out = capsys.readouterr().out
    assert "implicit sharing none, form vector" in out and "shared latent 0" in out
