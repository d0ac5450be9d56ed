"""Model and experiment YAMLs that ship inside the package, found by name.

``yolor-tiny`` names ``configs/models/yolor-tiny.yaml`` and ``synthetic`` names
``configs/experiments/synthetic.yaml``, both in a checkout and in an installed wheel (where ``configs/`` is the
package ``unified.configs``), so ``--model yolor-p6`` or ``Model("yolor-tiny")`` need no checkout. A file
that exists as given always wins over a packaged name.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal

from unified.config import ConfigError

Kind = Literal["model", "experiment"]
#: The folder of ``unified.configs`` holding each kind.
_FOLDERS: dict[str, str] = {"model": "models", "experiment": "experiments"}
_SUFFIXES = (".yaml", ".yml")


def configs_root() -> Path:
    """The folder of the packaged configs: the repository's ``configs/`` in a checkout, else the installed one."""
    import unified.configs

    return Path(next(iter(unified.configs.__path__)))


def packaged_names(kind: Kind) -> list[str]:
    """The names of the packaged configs of ``kind`` (file stems), sorted."""
    return sorted(p.stem for p in (configs_root() / _FOLDERS[kind]).glob("*.yaml"))


def packaged_config(kind: Kind, name: str) -> Path | None:
    """The packaged YAML called ``name`` (``yolor-tiny`` or ``yolor-tiny.yaml``), or None when there is none."""
    if Path(name).name != name:  # a path with folders is never a name
        return None
    stem = next((name[: -len(s)] for s in _SUFFIXES if name.endswith(s)), name)
    path = configs_root() / _FOLDERS[kind] / f"{stem}.yaml"
    return path if path.is_file() else None


def resolve_config(spec: str | Path, kind: Kind) -> Path:
    """``spec`` as given when it exists (relative to the working directory), else the packaged config it names.

    Raises:
        ConfigError: one line naming ``spec`` and listing the packaged names (with the closest one).
    """
    path = Path(spec)
    if path.exists():
        return path
    found = packaged_config(kind, str(spec))
    if found is not None:
        return found
    names = packaged_names(kind)
    close = difflib.get_close_matches(path.stem, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(
        f"{kind} {str(spec)!r}: no such file and no packaged {kind} of that name; {hint}packaged: {', '.join(names)}"
    )


__all__ = ["configs_root", "packaged_config", "packaged_names", "resolve_config"]
