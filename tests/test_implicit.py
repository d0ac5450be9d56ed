"""Implicit knowledge: ops, forms, the shared bank, and exact folding into convolutions."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from unified.implicit import (
    ImplicitBank,
    ImplicitError,
    ImplicitFoldError,
    ImplicitMF,
    ImplicitNN,
    ImplicitOp,
    ImplicitVector,
    fold_add_after,
    fold_add_before,
    fold_concat_before,
    fold_mul_after,
    fold_mul_before,
    implicit_constant,
)

FORMS = ("vector", "nn", "mf")


def _randomise(op: ImplicitOp) -> None:
    with torch.no_grad():
        for p in op.tensor.parameters():
            p.add_(torch.randn_like(p) * 0.3)


# -- ops and forms ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("form", FORMS)
def test_ops_apply_the_constant(form: str) -> None:
    torch.manual_seed(0)
    bank = ImplicitBank()
    x = torch.randn(2, 6, 5, 4)
    add = bank.get("a", 6, "add", form)
    mul = bank.get("m", 6, "mul", form)
    cat = bank.get("c", 3, "concat", form)
    g_add, g_mul, g_cat = add.value(), mul.value(), cat.value()
    assert g_add.shape == g_mul.shape == (1, 6, 1, 1) and g_cat.shape == (1, 3, 1, 1)
    torch.testing.assert_close(add(x), x + g_add)
    torch.testing.assert_close(mul(x), x * g_mul)
    y = cat(x)
    assert y.shape == (2, 9, 5, 4)
    torch.testing.assert_close(y[:, :6], x)
    torch.testing.assert_close(y[:, 6:], g_cat.expand(2, 3, 5, 4))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(("op", "centre"), [("add", 0.0), ("mul", 1.0), ("concat", 0.0)])
def test_initial_values_start_near_identity(form: str, op: str, centre: float) -> None:
    torch.manual_seed(0)
    g = ImplicitBank().get("t", 512, op, form).value().detach()  # type: ignore[arg-type]
    assert abs(g.mean().item() - centre) < 0.01
    assert 0.01 < g.std().item() < 0.04  # about N(centre, 0.02)


def test_vector_form_has_the_official_layout() -> None:
    bank = ImplicitBank()
    bank.get("detect.ia.0", 8, "add")
    bank.get("detect.im.0", 24, "mul")
    shapes = {k: tuple(v.shape) for k, v in bank.state_dict().items()}
    assert shapes == {"detect.ia.0.implicit": (1, 8, 1, 1), "detect.im.0.implicit": (1, 24, 1, 1)}
    assert isinstance(bank.tensor("detect.ia.0"), ImplicitVector)


def test_other_forms_and_their_sizes() -> None:
    bank = ImplicitBank(nn_dim=4, mf_atoms=None)
    nn_op = bank.get("n", 10, "add", "nn")
    mf_op = bank.get("f", 10, "mul", "mf")
    assert isinstance(nn_op.tensor, ImplicitNN) and isinstance(mf_op.tensor, ImplicitMF)
    assert sum(p.numel() for p in nn_op.tensor.parameters()) == 4 + 10 * 4 + 10
    assert sum(p.numel() for p in mf_op.tensor.parameters()) == 20 * 10 + 20  # 2·C atoms by default


# -- the bank --------------------------------------------------------------------------------------------
def test_same_name_shares_one_tensor_and_parameters_appear_once() -> None:
    bank = ImplicitBank()
    a = bank.get("shared.x", 4, "add")
    b = bank.get("shared.x", 4, "add")
    assert a.tensor is b.tensor
    holder = nn.ModuleDict({"bank": bank, "a": a, "b": b})
    assert list(holder.state_dict()) == ["bank.shared.x.implicit"]
    assert sum(p.numel() for p in holder.parameters()) == 4


def test_alias_makes_two_consumers_read_one_tensor() -> None:
    bank = ImplicitBank()
    bank.alias("jde.ia.0", "detect.ia.0")
    a = bank.get("detect.ia.0", 8, "add")
    b = bank.get("jde.ia.0", 8, "add")
    assert a.tensor is b.tensor and b.shared_name == "detect.ia.0"
    assert bank.names() == ["detect.ia.0"]
    assert bank.consumers() == {"detect.ia.0": "detect.ia.0", "jde.ia.0": "detect.ia.0"}
    x = torch.randn(1, 8, 2, 2)
    torch.testing.assert_close(a(x), b(x))


def test_conflicting_requests_are_clear_errors() -> None:
    bank = ImplicitBank()
    bank.alias("jde.ia.0", "detect.ia.0")
    bank.get("detect.ia.0", 8, "add")
    with pytest.raises(
        ImplicitError, match=r"'detect.ia.0' was created by 'detect.ia.0' with 8 channels.*16 channels"
    ):
        bank.get("jde.ia.0", 16, "add")
    with pytest.raises(ImplicitError, match="op 'mul'"):
        bank.get("detect.ia.0", 8, "mul")
    with pytest.raises(ImplicitError, match="unknown implicit op"):
        bank.get("z", 8, "sub")  # type: ignore[arg-type]
    with pytest.raises(ImplicitError, match="unknown implicit form"):
        bank.get("z", 8, "add", "conv")  # type: ignore[arg-type]
    with pytest.raises(ImplicitError, match="already requested"):
        bank.alias("detect.ia.0", "other")
    with pytest.raises(ImplicitError, match="points to itself"):
        bank.alias("p", "p")
    bank.alias("q", "r")
    with pytest.raises(ImplicitError, match="cycle"):
        bank.alias("r", "q")
    with pytest.raises(ImplicitError, match="both a tensor and a group"):
        bank.get("detect.ia.0.more", 8, "add")
    with pytest.raises(ImplicitError, match="dotted paths"):
        bank.get("bad..name", 8, "add")
    with pytest.raises(KeyError, match="no implicit tensor 'nothing'"):
        bank.tensor("nothing")


def test_deepcopy_keeps_sharing_between_bank_and_ops() -> None:
    bank = ImplicitBank()
    holder = nn.ModuleDict({"bank": bank, "op": bank.get("t", 4, "add")})
    clone = copy.deepcopy(holder)
    assert clone["op"].tensor is clone["bank"].tensor("t")
    assert clone["op"].tensor is not bank.tensor("t")


# -- folding ---------------------------------------------------------------------------------------------
def _conv(
    cin: int, cout: int, k: int, padding: int = 0, groups: int = 1, bias: bool = True, **kw: object
) -> nn.Conv2d:
    torch.manual_seed(cin * 7 + cout + k)
    conv = nn.Conv2d(cin, cout, k, padding=padding, groups=groups, bias=bias, **kw)  # type: ignore[arg-type]
    return conv.eval()


CONV_CASES = [
    dict(cin=8, cout=6, k=1),
    dict(cin=8, cout=6, k=1, bias=False),
    dict(cin=8, cout=6, k=3),  # unpadded 3×3
    dict(cin=8, cout=4, k=3, groups=2, stride=2),
    dict(cin=8, cout=8, k=3, dilation=2, groups=8),
    dict(cin=8, cout=6, k=3, padding=1, padding_mode="replicate"),
]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("case", CONV_CASES)
def test_add_before_folds_into_bias(case: dict, form: str) -> None:
    conv = _conv(**case)
    op = ImplicitBank().get("a", case["cin"], "add", form)
    _randomise(op)
    x = torch.randn(2, case["cin"], 9, 9)
    fused = fold_add_before(conv, op)
    torch.testing.assert_close(fused(x), conv(op(x)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(
    "case", [*CONV_CASES, dict(cin=8, cout=6, k=3, padding=1), dict(cin=8, cout=4, k=3, padding=1, groups=4)]
)
def test_mul_before_folds_into_weights_even_when_padded(case: dict, form: str) -> None:
    conv = _conv(**case)
    op = ImplicitBank().get("m", case["cin"], "mul", form)
    _randomise(op)
    x = torch.randn(2, case["cin"], 9, 9)
    fused = fold_mul_before(conv, op)
    torch.testing.assert_close(fused(x), conv(op(x)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("case", [dict(cin=8, cout=6, k=1), dict(cin=8, cout=6, k=3, padding=1, bias=False)])
def test_add_and_mul_after_fold_into_bias_and_weights(case: dict, form: str) -> None:
    conv = _conv(**case)
    bank = ImplicitBank()
    add, mul = bank.get("a", case["cout"], "add", form), bank.get("m", case["cout"], "mul", form)
    _randomise(add)
    _randomise(mul)
    x = torch.randn(2, case["cin"], 7, 7)
    torch.testing.assert_close(fold_add_after(conv, add)(x), add(conv(x)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fold_mul_after(conv, mul)(x), mul(conv(x)), atol=1e-5, rtol=1e-5)


def test_concat_before_an_unpadded_conv_folds_into_bias() -> None:
    conv = _conv(10, 6, 3)
    op = ImplicitBank().get("c", 4, "concat", "vector")
    _randomise(op)
    x = torch.randn(2, 6, 8, 8)
    fused = fold_concat_before(conv, op)
    assert fused.in_channels == 6
    torch.testing.assert_close(fused(x), conv(op(x)), atol=1e-5, rtol=1e-5)


def test_add_before_a_zero_padded_conv_is_refused_because_it_is_not_exact() -> None:
    conv = _conv(8, 6, 3, padding=1)
    op = ImplicitBank().get("a", 8, "add")
    _randomise(op)
    x = torch.randn(1, 8, 6, 6)
    naive = nn.Conv2d(8, 6, 3, padding=1)
    with torch.no_grad():  # what a naive fold would give: wrong at the borders
        naive.weight.copy_(conv.weight)
        naive.bias.copy_(conv.bias + conv.weight.sum((2, 3)) @ implicit_constant(op))
    diff = (naive(x) - conv(op(x))).abs()
    assert diff[..., 1:-1, 1:-1].max() < 1e-5 and diff.max() > 1e-3
    with pytest.raises(ImplicitFoldError, match="zero padding"):
        fold_add_before(conv, op)
    with pytest.raises(ImplicitFoldError, match="zero padding"):
        fold_add_before(_conv(8, 6, 1, padding=1), op)
    with pytest.raises(ImplicitFoldError, match="zero padding"):
        fold_concat_before(_conv(12, 6, 3, padding=1), ImplicitBank().get("c", 4, "concat"))


def test_fold_checks_channels() -> None:
    with pytest.raises(ImplicitFoldError, match="5 channels"):
        fold_add_after(_conv(8, 6, 1), torch.zeros(5))


# -- the shared latent (sharing: latent) -----------------------------------------------------------------
LATENT_FORMS = ("nn", "mf")


def _latent_bank(seed: int = 0) -> ImplicitBank:
    torch.manual_seed(seed)
    return ImplicitBank(nn_dim=8, sharing="latent")


def _randomise_bank(bank: ImplicitBank) -> None:
    with torch.no_grad():
        for (
            p
        ) in bank.parameters():  # the latent too: the consumers' parameters alone would not show a bad fold
            p.add_(torch.randn_like(p) * 0.3)


@pytest.mark.parametrize("form", LATENT_FORMS)
@pytest.mark.parametrize(("op", "centre"), [("add", 0.0), ("mul", 1.0), ("concat", 0.0)])
def test_latent_forms_start_near_identity(form: str, op: str, centre: float) -> None:
    g = _latent_bank().get("t", 512, op, form).value().detach()  # type: ignore[arg-type]
    assert g.shape == (1, 512, 1, 1) and abs(g.mean().item() - centre) < 0.01


def test_latent_nn_reads_one_z_and_latent_mf_one_set_of_atoms_per_width() -> None:
    bank = _latent_bank()
    a, b = bank.get("x.ia.0", 6, "add", "nn"), bank.get("y.im.0", 4, "mul", "nn")
    c, d = bank.get("x.ia.1", 6, "add", "mf"), bank.get("y.im.1", 6, "mul", "mf")
    e = bank.get("z.ia.0", 3, "add", "mf")
    keys = sorted(bank.state_dict())
    assert keys == sorted(
        [
            "latent.z", "latent.atoms.6", "latent.atoms.3",
            "x.ia.0.weight", "x.ia.0.bias", "y.im.0.weight", "y.im.0.bias",
            "x.ia.1.coefficients", "y.im.1.coefficients", "z.ia.0.coefficients",
        ]
    )  # fmt: skip
    assert a.tensor.latent is b.tensor.latent is c.tensor.latent is bank.latent
    assert bank.latent.atoms["6"].shape == (12, 6) and bank.latent.atoms["3"].shape == (6, 3)
    x = torch.randn(2, 6, 3, 3)
    torch.testing.assert_close(a(x), x + (a.tensor.weight @ bank.latent.z + a.tensor.bias).view(1, -1, 1, 1))
    torch.testing.assert_close(
        d(x), x * (1 + d.tensor.coefficients @ bank.latent.atoms["6"]).view(1, -1, 1, 1)
    )
    summary = bank.summary()
    assert summary.latent_params == 8 + 12 * 6 + 6 * 3 and summary.consumers == summary.tensors == 5
    assert summary.total == sum(p.numel() for p in bank.parameters())
    assert e.tensor.coefficients.shape == (6,)


def test_latent_names_and_sharing_are_checked() -> None:
    with pytest.raises(ImplicitError, match="latent"):
        _latent_bank().get("latent.x", 4, "add", "nn")
    with pytest.raises(ImplicitError, match="sharing"):
        ImplicitBank(sharing="everything")  # type: ignore[arg-type]


@pytest.mark.parametrize("form", LATENT_FORMS)
@pytest.mark.parametrize("case", CONV_CASES)
def test_latent_add_before_and_mul_before_fold_exactly(case: dict, form: str) -> None:
    conv = _conv(**case)
    bank = _latent_bank()
    add, mul = bank.get("a", case["cin"], "add", form), bank.get("m", case["cin"], "mul", form)
    _randomise_bank(bank)
    x = torch.randn(2, case["cin"], 9, 9)
    torch.testing.assert_close(fold_add_before(conv, add)(x), conv(add(x)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fold_mul_before(conv, mul)(x), conv(mul(x)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("form", LATENT_FORMS)
def test_latent_add_and_mul_after_fold_exactly(form: str) -> None:
    conv = _conv(8, 6, 3, padding=1)
    bank = _latent_bank()
    add, mul = bank.get("a", 6, "add", form), bank.get("m", 6, "mul", form)
    _randomise_bank(bank)
    x = torch.randn(2, 8, 7, 7)
    torch.testing.assert_close(fold_add_after(conv, add)(x), add(conv(x)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fold_mul_after(conv, mul)(x), mul(conv(x)), atol=1e-5, rtol=1e-5)


def test_deepcopy_keeps_the_latent_shared() -> None:
    bank = _latent_bank()
    ops = [bank.get("a", 4, "add", "nn"), bank.get("m", 4, "mul", "nn")]
    twin_bank, twin_ops = copy.deepcopy((bank, ops))
    assert all(op.tensor.latent is twin_bank.latent for op in twin_ops)
    with torch.no_grad():
        twin_bank.latent.z.add_(1.0)
    assert not torch.equal(twin_ops[0].value(), ops[0].value())
