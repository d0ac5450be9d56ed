"""Implicit knowledge: learned input-independent tensors that refine features and predictions.

YOLOR models implicit knowledge as ``y = x ⋆ g(z)``: a tensor ``g(z)`` of one value per channel, the same for
every image and every position, combined with a feature map ``x`` by an operator ``⋆``:

* ``add``: ``x + g`` (feature alignment, e.g. before the detection head's 1×1 conv),
* ``mul``: ``x · g`` (prediction refinement, e.g. on the head's output),
* ``concat``: ``[x, g]`` along channels (``g`` broadcast over batch and positions).

Three forms of ``g(z)``:

* ``vector``: ``g = z``, a single parameter of shape ``(1, C, 1, 1)`` named ``implicit`` (the layout of the
  official checkpoints' ``...implicit`` tensors). Initialised from N(0, 0.02) for add/concat and N(1, 0.02)
  for mul.
* ``nn``: ``g = W·z + b`` with ``z`` of a small dimension (``nn_dim``), ``W`` a linear map to ``C`` values and
  ``b`` a bias. Initialised so that ``g`` starts distributed like the vector form: ``z`` ~ N(0, 1),
  ``W`` ~ N(0, 0.02 / sqrt(dim)) (so ``W·z`` has a standard deviation of about 0.02) and ``b`` = 0 for
  add/concat, 1 for mul.
* ``mf`` (matrix factorisation): ``g = Zᵀc`` with ``K`` atoms ``Z`` (K, C) and coefficients ``c`` (K,);
  ``K`` defaults to ``2·C``. Initialised with ``c = 1/K`` and ``Z`` ~ N(base, 0.02·sqrt(K)), base = 0 for
  add/concat and 1 for mul, so ``g`` (the mean of the atoms) starts near ``base`` with a spread of about 0.02.

All tensors live in one :class:`ImplicitBank`. A consumer asks the bank for a tensor by name and gets a small
:class:`ImplicitOp` module that applies the operator; two consumers read the same tensor when they ask for
the same name or when the config aliases one name to another (``bank.alias``). Parameters belong to the
bank only, under readable names (``bank.detect.ia.0.implicit``), never duplicated in the consumers.

How consumers share implicit knowledge is the bank's ``sharing`` (:class:`ImplicitConfig`, the experiment's
``implicit:`` section):

* ``none``: every consumer its own tensor (only the explicit aliases of ``implicit_share`` are shared).
* ``alias``: whole tensors shared by alias, as darknet's ``shift_channels from=N``: besides the explicit
  aliases, every implicit *add* of another task at level ``L`` (``jdc.align.L``, ``jde.ia.L``,
  ``segment.ia.L`` ...) reads the reference task's (``detect``) add of level ``L`` when its channels and form
  are the same. Multiplies are never aliased automatically: each scales its own head's outputs.
* ``latent``: the paper's model of one implicit representation serving every task. For the ``nn`` form one
  latent ``z`` for the whole model (``bank.latent.z``) and each consumer its own ``g(z) = W·z + b``
  (``bank.<consumer>.weight`` / ``.bias``, :class:`LatentNN`); for the ``mf`` form shared atoms ``Z`` per
  channel count (``bank.latent.atoms.<C>``) and each consumer its own coefficients ``c``
  (``bank.<consumer>.coefficients``, :class:`LatentMF`: ``g = base + Zᵀc``, ``base`` a constant 1 for
  multiplies and 0 for adds, so an add and a multiply can read the same atoms). The ``vector`` form has
  no latent to share: its consumers are shared as ``alias`` says.

Every form reduces to a constant at inference, so an implicit op next to a convolution folds into it
(``fold_*`` helpers). The fold is refused where it would not be exact: an add (or concat) before a conv
that pads with zeros changes the border outputs, because the padding is added after the constant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from unified.config import check

ImplicitOpName = Literal["add", "mul", "concat"]
ImplicitForm = Literal["vector", "nn", "mf"]
ImplicitSharing = Literal["none", "alias", "latent"]

OPS: tuple[str, ...] = ("add", "mul", "concat")
FORMS: tuple[str, ...] = ("vector", "nn", "mf")
SHARINGS: tuple[str, ...] = ("none", "alias", "latent")
#: The bank's name of the shared latent (``bank.latent.z``, ``bank.latent.atoms.<C>``); no consumer may use it.
LATENT_NAME = "latent"
#: The task whose implicit adds the other tasks' adds read under ``alias`` sharing.
ALIAS_REFERENCE = "detect"


@dataclass
class ImplicitConfig:
    """How the model's implicit consumers share implicit knowledge (the experiment's ``implicit:`` section).

    Attributes:
        sharing: ``none`` (every consumer its own tensors), ``alias`` (tensors shared by alias: the explicit
            ``implicit_share`` map plus every other task's implicit add of a level reading ``detect``'s add of
            that level when their shapes agree), ``latent`` (``nn`` form: one ``z`` for the whole model, each
            consumer its own ``W·z + b``; ``mf`` form: shared atoms per channel count, each consumer its own
            coefficients; ``vector`` form: as ``alias``). Empty (None): ``latent`` when the model has more
            than one task, ``none`` for a single task (so single-task and official models are as before).
        nn_dim: Dimension of ``z`` of the ``nn`` form (per consumer, or the one shared latent).
        mf_atoms: Atoms of the ``mf`` form (per consumer, or per channel count when shared); empty: twice the
            channels.
    """

    sharing: ImplicitSharing | None = None
    nn_dim: int = 16
    mf_atoms: int | None = None

    def __post_init__(self) -> None:
        check(
            self.sharing is None or self.sharing in SHARINGS,
            "implicit.sharing",
            f"use one of {list(SHARINGS)}",
        )
        check(self.nn_dim >= 1, "implicit.nn_dim", f"must be >= 1, got {self.nn_dim}")
        check(
            self.mf_atoms is None or self.mf_atoms >= 1,
            "implicit.mf_atoms",
            "must be >= 1 (empty: 2·channels)",
        )

    def resolved(self, num_tasks: int) -> ImplicitConfig:
        """A copy with ``sharing`` decided: the empty default is ``latent`` for several tasks, else ``none``."""
        if self.sharing is not None:
            return ImplicitConfig(self.sharing, self.nn_dim, self.mf_atoms)
        return ImplicitConfig("latent" if num_tasks > 1 else "none", self.nn_dim, self.mf_atoms)


#: Standard deviation of the initial values (as in the official ImplicitA / ImplicitM).
INIT_STD = 0.02


class ImplicitError(ValueError):
    """A bank request that conflicts with an earlier one, an unknown op or form, or a bad alias."""


class ImplicitFoldError(ValueError):
    """Folding an implicit constant into a convolution would not be exact."""


def _base(op: str) -> float:
    return 1.0 if op == "mul" else 0.0


class ImplicitTensor(nn.Module):
    """Base class of the forms of ``g(z)``; ``value()`` is the ``(1, C, 1, 1)`` tensor ``g``."""

    def __init__(self, channels: int, op: str) -> None:
        super().__init__()
        if channels < 1:
            raise ImplicitError(f"an implicit tensor needs at least one channel, got {channels}")
        self.channels = channels
        self.op = op

    def value(self) -> torch.Tensor:
        """The tensor ``g(z)``, shape ``(1, C, 1, 1)``."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"channels={self.channels}, op={self.op!r}"


class ImplicitVector(ImplicitTensor):
    """``g = z``: one learned value per channel, parameter ``implicit`` of shape ``(1, C, 1, 1)``."""

    def __init__(self, channels: int, op: str) -> None:
        super().__init__(channels, op)
        self.implicit = nn.Parameter(torch.empty(1, channels, 1, 1))
        nn.init.normal_(self.implicit, mean=_base(op), std=INIT_STD)

    def value(self) -> torch.Tensor:
        return self.implicit


class ImplicitNN(ImplicitTensor):
    """``g = W·z + b``: a small latent ``z`` mapped to ``C`` channels by a linear layer.

    Args:
        channels: Number of channels ``C`` of ``g``.
        op: The operator the tensor serves (sets the initial value of ``b``).
        dim: Dimension of ``z``.
    """

    def __init__(self, channels: int, op: str, dim: int = 16) -> None:
        super().__init__(channels, op)
        if dim < 1:
            raise ImplicitError(f"the nn form needs a latent dimension of at least 1, got {dim}")
        self.z = nn.Parameter(torch.randn(dim))
        self.weight = nn.Parameter(torch.randn(channels, dim) * (INIT_STD / math.sqrt(dim)))
        self.bias = nn.Parameter(torch.full((channels,), _base(op)))

    def value(self) -> torch.Tensor:
        return torch.addmv(self.bias, self.weight, self.z).view(1, -1, 1, 1)


class ImplicitMF(ImplicitTensor):
    """``g = Zᵀc``: a combination of ``atoms`` learned atoms with learned coefficients.

    Args:
        channels: Number of channels ``C`` of ``g``.
        op: The operator the tensor serves (sets the centre of the atoms' initial values).
        atoms: Number of atoms ``K`` (default ``2·C``).
    """

    def __init__(self, channels: int, op: str, atoms: int | None = None) -> None:
        super().__init__(channels, op)
        k = atoms if atoms is not None else 2 * channels
        if k < 1:
            raise ImplicitError(f"the mf form needs at least one atom, got {k}")
        self.atoms = nn.Parameter(torch.randn(k, channels) * (INIT_STD * math.sqrt(k)) + _base(op))
        self.coefficients = nn.Parameter(torch.full((k,), 1.0 / k))

    def value(self) -> torch.Tensor:
        return (self.coefficients @ self.atoms).view(1, -1, 1, 1)


class LatentCode(nn.Module):
    """The implicit representation the consumers share under ``latent`` sharing (``bank.latent``).

    Holds ``z`` (``nn`` form, ``(dim,)``, N(0, 1)) and ``atoms`` (``mf`` form, one ``(K, C)`` parameter per
    channel count ``C`` under the key ``str(C)``, N(0, 0.02·sqrt(K))), each created on its first request.
    """

    def __init__(self, dim: int, atoms: int | None) -> None:
        super().__init__()
        self.dim = dim
        self.atoms_per_channels = atoms
        self.register_parameter("z", None)
        self.atoms = nn.ParameterDict()

    def latent_z(self) -> nn.Parameter:
        """The shared ``z`` (created on the first call)."""
        if self.z is None:
            self.z = nn.Parameter(torch.randn(self.dim))
        return self.z

    def latent_atoms(self, channels: int) -> nn.Parameter:
        """The shared ``(K, channels)`` atoms (created on the first call for that channel count)."""
        key = str(channels)
        if key not in self.atoms:
            k = self.atoms_per_channels if self.atoms_per_channels is not None else 2 * channels
            if k < 1:
                raise ImplicitError(f"the mf form needs at least one atom, got {k}")
            self.atoms[key] = nn.Parameter(torch.randn(k, channels) * (INIT_STD * math.sqrt(k)))
        return self.atoms[key]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, atoms for channels {list(self.atoms.keys())}"


class LatentNN(ImplicitTensor):
    """``g = W·z + b`` with the bank's shared ``z`` (``bank.latent.z``): this consumer owns ``W`` and ``b``.

    The latent is a plain reference (not a submodule), so ``z`` appears once in ``state_dict``, under the bank.
    """

    def __init__(self, channels: int, op: str, latent: LatentCode) -> None:
        super().__init__(channels, op)
        z = latent.latent_z()
        self.weight = nn.Parameter(torch.randn(channels, z.numel()) * (INIT_STD / math.sqrt(z.numel())))
        self.bias = nn.Parameter(torch.full((channels,), _base(op)))
        object.__setattr__(self, "_latent", latent)

    @property
    def latent(self) -> LatentCode:
        return self._latent

    def value(self) -> torch.Tensor:
        z = self._latent.z
        assert z is not None
        return torch.addmv(self.bias, self.weight, z).view(1, -1, 1, 1)


class LatentMF(ImplicitTensor):
    """``g = base + Zᵀc`` with the bank's shared atoms ``Z`` of this channel count: this consumer owns ``c``.

    ``base`` is the op's neutral value (1 for a multiply, 0 for an add), a constant, so that adds and
    multiplies of one width can read the same atoms; ``c = 1/K`` at first, so ``g`` starts near ``base``.
    """

    def __init__(self, channels: int, op: str, latent: LatentCode) -> None:
        super().__init__(channels, op)
        atoms = latent.latent_atoms(channels)
        self.coefficients = nn.Parameter(torch.full((atoms.shape[0],), 1.0 / atoms.shape[0]))
        self.base = _base(op)
        object.__setattr__(self, "_latent", latent)

    @property
    def latent(self) -> LatentCode:
        return self._latent

    def value(self) -> torch.Tensor:
        atoms = self._latent.atoms[str(self.channels)]
        return (self.coefficients @ atoms + self.base).view(1, -1, 1, 1)


class ImplicitOp(nn.Module):
    """Applies ``x ⋆ g`` with a tensor held by an :class:`ImplicitBank`.

    The op keeps a plain (unregistered) reference to the bank's tensor module, so the parameters appear once,
    under the bank, in ``state_dict`` and ``parameters()``; ``deepcopy`` of a model that holds both keeps
    the sharing.

    Attributes:
        name: The consumer name the op was requested under.
        shared_name: The bank tensor it reads (differs from ``name`` when aliased).
        op: ``"add"``, ``"mul"`` or ``"concat"``.
    """

    def __init__(self, name: str, shared_name: str, tensor: ImplicitTensor, op: str) -> None:
        super().__init__()
        self.name = name
        self.shared_name = shared_name
        self.op = op
        object.__setattr__(self, "_tensor", tensor)  # deliberately not a submodule: the bank owns it

    @property
    def tensor(self) -> ImplicitTensor:
        """The bank's tensor module."""
        return self._tensor

    @property
    def channels(self) -> int:
        return self._tensor.channels

    def value(self) -> torch.Tensor:
        """The current ``g(z)``, shape ``(1, C, 1, 1)``."""
        return self._tensor.value()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self._tensor.value()
        if self.op == "add":
            return x + g
        if self.op == "mul":
            return x * g
        return torch.cat([x, g.to(x.dtype).expand(x.shape[0], -1, x.shape[2], x.shape[3])], dim=1)

    def extra_repr(self) -> str:
        shared = f" -> {self.shared_name!r}" if self.shared_name != self.name else ""
        return f"{self.op} {self.name!r}{shared}, channels={self.channels}"


@dataclass(frozen=True)
class _Spec:
    channels: int
    op: str
    form: str
    requested_by: str


class _Namespace(nn.Module):
    """An inner node of the bank's name tree (one level per dotted name segment)."""


class ImplicitBank(nn.Module):
    """A shared bank of named implicit tensors.

    Names are dotted paths (``detect.ia.0``); each segment becomes a submodule level, so parameters read
    ``bank.detect.ia.0.implicit`` in a model's ``state_dict``. Under ``latent`` sharing the shared
    representation is ``bank.latent`` (:class:`LatentCode`).

    Args:
        nn_dim: Latent dimension of tensors of the ``nn`` form.
        mf_atoms: Number of atoms of tensors of the ``mf`` form (default: twice the channels).
        sharing: ``none``, ``alias`` or ``latent`` (see the module docstring).
        reference: The task whose implicit adds other tasks' adds read under ``alias`` sharing.
    """

    def __init__(
        self,
        nn_dim: int = 16,
        mf_atoms: int | None = None,
        sharing: ImplicitSharing = "none",
        reference: str = ALIAS_REFERENCE,
    ) -> None:
        super().__init__()
        if sharing not in SHARINGS:
            raise ImplicitError(f"unknown implicit sharing {sharing!r}; use one of {list(SHARINGS)}")
        self.nn_dim = nn_dim
        self.mf_atoms = mf_atoms
        self.sharing = sharing
        self.reference = reference
        self._specs: dict[str, _Spec] = {}
        self._aliases: dict[str, str] = {}
        self._automatic: set[str] = set()
        self._consumers: dict[str, str] = {}
        if sharing == "latent":
            self.latent = LatentCode(nn_dim, mf_atoms)

    @classmethod
    def from_config(cls, cfg: ImplicitConfig) -> ImplicitBank:
        """A bank for a resolved :class:`ImplicitConfig` (its ``sharing`` decided)."""
        return cls(cfg.nn_dim, cfg.mf_atoms, cfg.sharing or "none")

    # -- names -------------------------------------------------------------------------------------------
    def alias(self, consumer_name: str, shared_name: str) -> None:
        """Make ``consumer_name`` read the tensor ``shared_name`` (like darknet's ``shift_channels from=N``).

        Raises:
            ImplicitError: if the consumer already has its own tensor or another alias, or the alias would
                point to itself.
        """
        _check_name(consumer_name)
        _check_name(shared_name)
        if consumer_name == shared_name:
            raise ImplicitError(f"implicit alias {consumer_name!r} -> {shared_name!r} points to itself")
        if consumer_name in self._specs or consumer_name in self._consumers:
            raise ImplicitError(
                f"cannot alias implicit tensor {consumer_name!r} to {shared_name!r}: it was already requested "
                f"(declare aliases before building the heads that use them)"
            )
        previous = self._aliases.get(consumer_name)
        if previous is not None and previous != shared_name:
            raise ImplicitError(
                f"implicit tensor {consumer_name!r} is already aliased to {previous!r}, not {shared_name!r}"
            )
        self._aliases[consumer_name] = shared_name
        self.resolve(consumer_name)  # reject cycles now, where the config names them

    def resolve(self, name: str) -> str:
        """The bank tensor name that ``name`` reads after following aliases."""
        seen = [name]
        while name in self._aliases:
            name = self._aliases[name]
            if name in seen:
                raise ImplicitError(f"implicit aliases form a cycle: {' -> '.join([*seen, name])}")
            seen.append(name)
        return name

    def aliases(self) -> dict[str, str]:
        """Aliases, consumer name → shared name: the declared ones and those ``alias`` sharing made."""
        return dict(self._aliases)

    def automatic_aliases(self) -> dict[str, str]:
        """The aliases ``alias`` sharing (or ``latent`` with the vector form) made, consumer → shared name."""
        return {k: v for k, v in self._aliases.items() if k in self._automatic}

    def consumers(self) -> dict[str, str]:
        """Every name requested so far → the tensor it reads."""
        return dict(self._consumers)

    def names(self) -> list[str]:
        """Names of the tensors created so far, in creation order."""
        return list(self._specs)

    # -- tensors -----------------------------------------------------------------------------------------
    def get(self, name: str, channels: int, op: ImplicitOpName, form: ImplicitForm = "vector") -> ImplicitOp:
        """A module applying ``op`` with the tensor ``name`` (created on the first request).

        Args:
            name: Consumer name, e.g. ``detect.ia.0``; aliases are followed.
            channels: Channels of the tensor (for ``concat``: the number of channels appended).
            op: ``"add"``, ``"mul"`` or ``"concat"``.
            form: ``"vector"``, ``"nn"`` or ``"mf"``.

        Raises:
            ImplicitError: for an unknown op or form, or a request whose channels, op or form differ from
                the request that created the shared tensor.
        """
        _check_name(name)
        if op not in OPS:
            raise ImplicitError(f"unknown implicit op {op!r} for {name!r}; use one of {list(OPS)}")
        if form not in FORMS:
            raise ImplicitError(f"unknown implicit form {form!r} for {name!r}; use one of {list(FORMS)}")
        if name.split(".")[0] == LATENT_NAME:
            raise ImplicitError(f"implicit tensor name {name!r}: {LATENT_NAME!r} is the bank's shared latent")
        if name not in self._aliases and name not in self._specs and self._shares_by_alias(form):
            target = self._alias_target(name, channels, op, form)
            if target is not None:
                self._aliases[name] = target
                self._automatic.add(name)
        shared = self.resolve(name)
        spec = self._specs.get(shared)
        if spec is None:
            tensor = self._create(channels, op, form)
            self._insert(shared, tensor)
            spec = self._specs[shared] = _Spec(channels, op, form, name)
        elif (spec.channels, spec.op, spec.form) != (channels, op, form):
            via = f" (alias of {shared!r})" if shared != name else ""
            raise ImplicitError(
                f"implicit tensor {shared!r} was created by {spec.requested_by!r} with {spec.channels} "
                f"channels, op {spec.op!r}, form {spec.form!r}; {name!r}{via} asks for {channels} channels, "
                f"op {op!r}, form {form!r}"
            )
        self._consumers[name] = shared
        return ImplicitOp(name, shared, self.tensor(shared), op)

    def tensor(self, name: str) -> ImplicitTensor:
        """The tensor module that ``name`` reads.

        Raises:
            KeyError: if no such tensor was created.
        """
        shared = self.resolve(name)
        if shared not in self._specs:
            known = ", ".join(self._specs) or "none"
            raise KeyError(f"no implicit tensor {shared!r} in the bank (created: {known})")
        node: nn.Module = self
        for part in shared.split("."):
            node = node._modules[part]  # type: ignore[assignment]
        return node  # type: ignore[return-value]

    def _shares_by_alias(self, form: str) -> bool:
        return self.sharing == "alias" or (self.sharing == "latent" and form == "vector")

    def _alias_target(self, name: str, channels: int, op: str, form: str) -> str | None:
        """Under ``alias`` sharing: the reference task's add of the same level, channels and form, if any.

        Only adds are aliased: an add at level ``L`` acts on that level's features, whichever head reads
        them, while a multiply scales its own head's outputs, whose channels mean something else in each.
        """
        parts = name.split(".")
        if op != "add" or parts[0] == self.reference or len(parts) < 2 or not parts[-1].isdigit():
            return None
        for other, spec in self._specs.items():
            pieces = other.split(".")
            if (
                pieces[0] == self.reference
                and pieces[-1] == parts[-1]
                and (spec.channels, spec.op, spec.form) == (channels, op, form)
            ):
                return other
        return None

    def _create(self, channels: int, op: str, form: str) -> ImplicitTensor:
        if form == "vector":
            return ImplicitVector(channels, op)
        if self.sharing == "latent":
            return (
                LatentNN(channels, op, self.latent) if form == "nn" else LatentMF(channels, op, self.latent)
            )
        if form == "nn":
            return ImplicitNN(channels, op, self.nn_dim)
        return ImplicitMF(channels, op, self.mf_atoms)

    def summary(self) -> ImplicitSummary:
        """Counts of the bank's implicit parameters: shared and per consumer."""
        latent = sum(p.numel() for p in self.latent.parameters()) if self.sharing == "latent" else 0
        readers: dict[str, int] = {}
        for shared in self._consumers.values():
            readers[shared] = readers.get(shared, 0) + 1
        own = {name: sum(p.numel() for p in self.tensor(name).parameters()) for name in self._specs}
        shared_tensors = [name for name in self._specs if readers.get(name, 0) > 1]
        return ImplicitSummary(
            sharing=self.sharing,
            consumers=len(self._consumers),
            tensors=len(self._specs),
            latent_params=latent,
            consumer_params=sum(own.values()),
            aliased_tensors=len(shared_tensors),
            aliased_params=sum(own[n] for n in shared_tensors),
        )

    def _insert(self, name: str, tensor: ImplicitTensor) -> None:
        parts = name.split(".")
        node: nn.Module = self
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            existing = node._modules.get(part)
            if existing is None:
                if hasattr(node, part):
                    raise ImplicitError(
                        f"implicit tensor name {name!r}: segment {part!r} clashes with an attribute of the bank"
                    )
                child: nn.Module = tensor if last else _Namespace()
                node.add_module(part, child)
                node = child
            elif last or isinstance(existing, ImplicitTensor):
                prefix = ".".join(parts[: depth + 1])
                raise ImplicitError(
                    f"implicit tensor name {name!r} clashes with {prefix!r}: a name cannot be both a tensor "
                    f"and a group of tensors"
                )
            else:
                node = existing

    def extra_repr(self) -> str:
        return f"tensors={len(self._specs)}, aliases={len(self._aliases)}, sharing={self.sharing!r}"


@dataclass
class ImplicitSummary:
    """The implicit parameters of a bank, by who reads them (what ``unified info`` reports).

    Attributes:
        sharing: The bank's sharing.
        consumers: Names requested (heads' and layers' implicit ops, feature-alignment sites).
        tensors: Tensors created (fewer than ``consumers`` when some are aliased).
        latent_params: Parameters of the shared latent (``z``, atoms) that every ``nn``/``mf`` consumer reads.
        consumer_params: Parameters of the tensors themselves (vectors; ``W`` and ``b``; coefficients; with
            ``none`` sharing of the ``nn``/``mf`` forms each tensor's own ``z`` or atoms too).
        aliased_tensors: Tensors that more than one consumer reads (by alias).
        aliased_params: Their parameters (part of ``consumer_params``).
    """

    sharing: str
    consumers: int
    tensors: int
    latent_params: int
    consumer_params: int
    aliased_tensors: int
    aliased_params: int

    @property
    def total(self) -> int:
        return self.latent_params + self.consumer_params


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or any(not part for part in name.split(".")):
        raise ImplicitError(
            f"implicit tensor names are non-empty dotted paths like 'detect.ia.0', got {name!r}"
        )


# -- folding ---------------------------------------------------------------------------------------------
ConstantLike = torch.Tensor | ImplicitOp | ImplicitTensor


def implicit_constant(source: ConstantLike, channels: int | None = None) -> torch.Tensor:
    """Reduce an implicit op, tensor module or tensor to a detached ``(C,)`` constant.

    Raises:
        ImplicitFoldError: if ``channels`` is given and differs from the constant's length.
    """
    value = source.value() if isinstance(source, (ImplicitOp, ImplicitTensor)) else source
    g = value.detach().reshape(-1)
    if channels is not None and g.numel() != channels:
        raise ImplicitFoldError(
            f"implicit constant has {g.numel()} channels, the convolution needs {channels}"
        )
    return g


def _is_zero_padded(conv: nn.Conv2d) -> bool:
    """True when the conv pads its input with zeros (a constant added before it does not commute)."""
    if conv.padding_mode != "zeros":
        return False  # reflect / replicate / circular padding of (x + g) equals padding of x, plus g
    if isinstance(conv.padding, str):
        return conv.padding == "same" and any(k > 1 for k in conv.kernel_size)
    return any(p != 0 for p in conv.padding)


def conv_with_params(
    conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor, in_channels: int | None = None
) -> nn.Conv2d:
    """A new conv shaped like ``conv`` (same stride, padding, groups, device, mode) with the given weight and bias."""
    new = nn.Conv2d(
        in_channels if in_channels is not None else conv.in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        new.weight.copy_(weight)
        new.bias.copy_(bias)
    new.train(conv.training)
    return new


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    if conv.bias is not None:
        return conv.bias.detach()
    return torch.zeros(conv.out_channels, device=conv.weight.device, dtype=conv.weight.dtype)


def _input_response(conv: nn.Conv2d, g: torch.Tensor) -> torch.Tensor:
    """``W * g`` for a constant input ``g``: what the conv adds to every (unpadded) output position."""
    kh = (conv.kernel_size[0] - 1) * conv.dilation[0] + 1
    kw = (conv.kernel_size[1] - 1) * conv.dilation[1] + 1
    patch = g.to(conv.weight.dtype).view(1, -1, 1, 1).expand(1, g.numel(), kh, kw)
    out = F.conv2d(patch, conv.weight.detach(), None, 1, 0, conv.dilation, conv.groups)
    return out.view(-1)


def fold_add_before(conv: nn.Conv2d, source: ConstantLike) -> nn.Conv2d:
    """``conv(x + g)`` as one conv: ``g`` moves into the bias (exact for unpadded convs only).

    Raises:
        ImplicitFoldError: if the conv pads with zeros (its border outputs would differ).
    """
    if _is_zero_padded(conv):
        raise ImplicitFoldError(
            f"cannot fold an implicit add into a {conv.kernel_size[0]}x{conv.kernel_size[1]} conv with zero "
            f"padding {conv.padding}: the padding is added after the constant, so border outputs would change"
        )
    g = implicit_constant(source, conv.in_channels)
    with torch.no_grad():
        return conv_with_params(conv, conv.weight.detach(), _bias(conv) + _input_response(conv, g))


def fold_concat_before(conv: nn.Conv2d, source: ConstantLike) -> nn.Conv2d:
    """``conv([x, g])`` as a conv on ``x`` alone: the ``g`` channels move into the bias.

    The conv must read the implicit channels last (``[x, g]``) and be unpadded.

    Raises:
        ImplicitFoldError: if the conv pads with zeros, is grouped, or has too few input channels.
    """
    g = implicit_constant(source)
    keep = conv.in_channels - g.numel()
    if keep < 1 or conv.groups != 1:
        raise ImplicitFoldError(
            f"cannot fold {g.numel()} concatenated implicit channels into a conv with {conv.in_channels} "
            f"inputs and {conv.groups} groups"
        )
    if _is_zero_padded(conv):
        raise ImplicitFoldError(
            "cannot fold an implicit concat into a conv with zero padding: borders would change"
        )
    part = nn.Conv2d(g.numel(), conv.out_channels, conv.kernel_size, dilation=conv.dilation, bias=False)  # type: ignore[arg-type]
    part = part.to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        part.weight.copy_(conv.weight[:, keep:])
        return conv_with_params(
            conv, conv.weight[:, :keep].detach(), _bias(conv) + _input_response(part, g), keep
        )


def fold_mul_before(conv: nn.Conv2d, source: ConstantLike) -> nn.Conv2d:
    """``conv(x · g)`` as one conv: ``g`` scales the weights per input channel (exact with any padding)."""
    g = implicit_constant(source, conv.in_channels).to(conv.weight.dtype)
    per_group = conv.in_channels // conv.groups
    out_per_group = conv.out_channels // conv.groups
    scale = g.view(conv.groups, 1, per_group).expand(conv.groups, out_per_group, per_group)
    scale = scale.reshape(conv.out_channels, per_group, 1, 1)
    with torch.no_grad():
        return conv_with_params(conv, conv.weight.detach() * scale, _bias(conv))


def fold_add_after(conv: nn.Conv2d, source: ConstantLike) -> nn.Conv2d:
    """``conv(x) + g`` as one conv (nothing nonlinear may sit between them): ``g`` joins the bias."""
    g = implicit_constant(source, conv.out_channels).to(conv.weight.dtype)
    with torch.no_grad():
        return conv_with_params(conv, conv.weight.detach(), _bias(conv) + g)


def fold_mul_after(conv: nn.Conv2d, source: ConstantLike) -> nn.Conv2d:
    """``conv(x) · g`` as one conv (nothing nonlinear may sit between them): ``g`` scales weights and bias."""
    g = implicit_constant(source, conv.out_channels).to(conv.weight.dtype)
    with torch.no_grad():
        return conv_with_params(conv, conv.weight.detach() * g.view(-1, 1, 1, 1), _bias(conv) * g)


__all__ = [
    "ALIAS_REFERENCE",
    "FORMS",
    "INIT_STD",
    "LATENT_NAME",
    "OPS",
    "SHARINGS",
    "ImplicitBank",
    "ImplicitConfig",
    "ImplicitSharing",
    "ImplicitSummary",
    "LatentCode",
    "LatentMF",
    "LatentNN",
    "ImplicitError",
    "ImplicitFoldError",
    "ImplicitForm",
    "ImplicitMF",
    "ImplicitNN",
    "ImplicitOp",
    "ImplicitOpName",
    "ImplicitTensor",
    "ImplicitVector",
    "fold_add_after",
    "fold_add_before",
    "fold_concat_before",
    "fold_mul_after",
    "fold_mul_before",
    "implicit_constant",
]
