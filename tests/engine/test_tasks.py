"""The task contract, generated from the registry: every registered task builds, trains and predicts."""

from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import make_batch
from unified.engine.balancers import build_balancer
from unified.engine.evaluate import predict
from unified.engine.trainer import TrainingModule
from unified.model import build_model
from unified.registry import RegistryError
from unified.task import TASKS, resolve_tasks

PLUGIN = "tests.plugins.counting_task"
#: Every test plugin that registers a task (and perhaps kinds of label): the contract tests cover them all.
PLUGINS = [PLUGIN, "tests.plugins.landmark_task"]


def all_tasks() -> list[str]:
    import importlib

    for plugin in PLUGINS:
        importlib.import_module(plugin)
    return TASKS.names()


@pytest.mark.parametrize("task", all_tasks())
def test_task_contract(task, tiny_model_cfg, tiny_info):
    torch.manual_seed(0)
    model = build_model(tiny_model_cfg, tasks=[task], info=tiny_info, plugins=PLUGINS)
    assert list(model.tasks) == resolve_tasks([task]) and task in model.tasks
    module = TrainingModule(model, build_balancer("fixed", list(model.tasks), {}, {}))
    batch = make_batch(tiny_info, size=96)
    total, task_totals, terms = module(batch)
    assert set(task_totals) == set(model.tasks)
    for name, task_terms in terms.items():
        assert task_terms, name
        for term, value in task_terms.items():
            assert value.ndim == 0 and math.isfinite(value.item()), (name, term)
    total.backward()
    head_grads = [p.grad for p in model.heads[task].parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in head_grads)
    assert any(g.abs().sum() > 0 for g in head_grads)
    model.eval()
    with torch.no_grad():
        predictions = predict(model, batch["images"], batch["meta"])
        assert set(predictions) == set(model.tasks)
        assert all(len(p) == 4 for p in predictions.values())
        evaluators = {name: t.make_evaluator() for name, t in model.tasks.items()}
        for evaluator in evaluators.values():
            evaluator.update(predictions, batch)
        metrics = {name: e.compute() for name, e in evaluators.items()}
    assert all(isinstance(m, dict) and m for m in metrics.values())
    check_presentation_contract(model, predictions, batch)


def check_presentation_contract(model, predictions, batch) -> None:
    """What the tools draw and write (``Task.draw``, ``instance_fields``, ``image_fields``, ``arrays``,
    ``export_outputs``) holds for every task: rows match the detections, keys match the declared ones,
    records are JSON, drawings keep the image size."""
    import json

    import numpy as np

    from unified.export.onnx import ExportModule
    from unified.inference import Frame, detection_arrays, draw_predictions, image_fields, instance_records

    for i, meta in enumerate(batch["meta"]):
        image = {name: per_image[i] for name, per_image in predictions.items()}
        # A model without detect (the counting plugin) has no detections: no rows at all.
        count = len(image["detect"]["scores"]) if "detect" in image else 0
        for name, task in model.tasks.items():
            rows = task.instance_fields(image)
            assert rows == [] or len(rows) == count, name
            assert set(task.image_fields(image)) == set(task.image_keys), name
            arrays = task.arrays(image)
            assert set(arrays) == set(task.array_keys), name
            assert all(len(a) == count for a in arrays.values()), name
        h, w = meta["orig_shape"]
        frame = Frame(np.zeros((h, w, 3), np.uint8), f"image{i}.png", f"image{i}", i)
        records = instance_records(model, frame, image)
        assert len(records) == count and all(r["image_id"] == i for r in records)
        json.dumps([records, image_fields(model, image)])
        assert set(detection_arrays(model, image)) == {k for t in model.tasks.values() for k in t.array_keys}
        assert draw_predictions(model, frame.image, image).size == (w, h)
    named = ExportModule(model).named_outputs(batch["images"])
    assert named and all(v.shape[0] == len(batch["images"]) for v in named.values())
    assert ("decoded" in named) == ("detect" in model.tasks)


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for k in sorted(value) for t in _tensors(value[k])]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


@pytest.mark.parametrize("task", all_tasks())
def test_fused_model_computes_what_the_unfused_one_does(task, tiny_model_cfg, tiny_info):
    import copy

    from unified.implicit import ImplicitOp
    from unified.models.fuse import Fusable

    torch.manual_seed(0)
    model = build_model(tiny_model_cfg, tasks=[task], info=tiny_info, plugins=PLUGINS).eval()
    # Statistics and implicit tensors away from their identity initialisation, so every fold matters.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
        for p in model.bank.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    images = make_batch(tiny_info, size=96)["images"]
    with torch.no_grad():
        before = _tensors(model(images))
        fused = copy.deepcopy(model).fuse()
        after = _tensors(fused(images))
    assert len(before) == len(after)
    for a, b in zip(before, after):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    for name, head in fused.heads.items():
        if isinstance(head, Fusable):  # a head that folds must leave nothing to fold
            left = [
                type(m).__name__ for m in head.modules() if isinstance(m, (ImplicitOp, torch.nn.BatchNorm2d))
            ]
            assert not left, f"{name} head still has {left} after fuse()"


@pytest.mark.parametrize("task", ["jdc", "jde"])
def test_a_batch_without_the_tasks_labels_gives_zero_with_a_gradient_path(task, tiny_model_cfg, tiny_info):
    model = build_model(tiny_model_cfg, tasks=[task], info=tiny_info)
    kind = model.tasks[task].label_kinds[0]
    masks = {k: torch.ones(4, dtype=torch.bool) for k in ("boxes", "image_labels", "identities")}
    masks[kind] = torch.zeros(4, dtype=torch.bool)
    batch = make_batch(tiny_info, size=96, label_masks=masks)
    module = TrainingModule(model, build_balancer("fixed", list(model.tasks), {}, {}))
    _, task_totals, _ = module(batch)
    assert task_totals[task].item() == 0.0
    task_totals[task].backward()
    # Every head parameter is reached (zero gradient), so DDP's reduction never waits for it.
    assert all(p.grad is not None for p in model.heads[task].parameters())


def test_losses_cover_only_labelled_images(tiny_model_cfg, tiny_info):
    torch.manual_seed(0)
    model = build_model(tiny_model_cfg, tasks=["jdc"], info=tiny_info)
    module = TrainingModule(model, build_balancer("fixed", list(model.tasks), {}, {}))
    batch = make_batch(tiny_info, size=96)
    half = {k: torch.tensor([True, True, False, False]) for k in ("boxes", "image_labels", "identities")}
    _, full, _ = module(batch)
    _, partial, _ = module({**batch, "label_mask": half})
    # The image-level loss is a per-image sum: dropping two images' labels drops their share only.
    per_image = torch.nn.functional.binary_cross_entropy_with_logits(
        model(batch["images"])["jdc"]["logits"], batch["image_labels"], reduction="none"
    ).mean(1)
    assert partial["jdc"].item() == pytest.approx(per_image[:2].sum().item(), rel=1e-5)
    assert full["jdc"].item() == pytest.approx(per_image.sum().item(), rel=1e-5)


def test_jdc_and_jde_share_one_detection_head(tiny_model_cfg, tiny_info):
    model = build_model(tiny_model_cfg, tasks=["jdc", "jde"], info=tiny_info)
    assert list(model.tasks) == ["detect", "jdc", "jde"]
    assert list(model.heads) == ["detect", "jdc", "jde"]


def test_unknown_task_lists_registered(tiny_model_cfg, tiny_info):
    with pytest.raises(RegistryError, match=r"unknown task 'detcet'.*Did you mean 'detect'"):
        build_model(tiny_model_cfg, tasks=["detcet"], info=tiny_info)


def test_jde_without_identities_is_a_clear_error(tiny_model_cfg):
    from unified.task import DatasetInfo

    info = DatasetInfo(class_names=["a"], num_identities=0)
    with pytest.raises(ValueError, match="needs training data with identities"):
        build_model(tiny_model_cfg, tasks=["jde"], info=info)


def test_shared_implicit_tensor_between_tasks(tiny_model_cfg, tiny_info):
    model = build_model(
        tiny_model_cfg, tasks=["detect", "jde"], info=tiny_info, implicit_share={"jde.im.0": "jde.im.1"}
    )
    names = [n for n, _ in model.named_parameters() if n.startswith("bank.jde.im")]
    assert names == ["bank.jde.im.1.implicit"]


def test_a_task_that_breaks_the_contract_is_refused_when_the_model_is_built(tiny_model_cfg, tiny_info):
    """Following an out-of-date doc (``make_evaluator(info)``) or naming a kind nobody registered used to
    crash after the first epoch with an empty ``weights/``; now the model refuses to build."""
    from tests.plugins.counting_task import CountTask

    class OldSignature(CountTask):
        name = "old_signature"

        def make_evaluator(self, info):  # type: ignore[override]
            return super().make_evaluator()

    class UnknownKind(CountTask):
        name = "unknown_kind"
        label_kinds = ("colour",)

    TASKS.add("old_signature", OldSignature)
    TASKS.add("unknown_kind", UnknownKind)
    with pytest.raises(
        TypeError,
        match=r"task 'old_signature'.*make_evaluator\(self, info\) where the contract is make_evaluator\(self\)",
    ):
        build_model(tiny_model_cfg, tasks=["old_signature"], info=tiny_info)
    with pytest.raises(TypeError, match=r"task 'unknown_kind'.*label kinds \['colour'\] are not registered"):
        build_model(tiny_model_cfg, tasks=["unknown_kind"], info=tiny_info)
