"""Small typed registries, one per real extension point.

A registry maps a name to an object (a class or a factory). Registration is explicit, by decorator,
in the module that defines the object. A failed lookup lists what is registered, suggests the closest
name and says which module registered each entry, so "X is not in the registry" never leaves a user
guessing.

Before the first lookup a registry imports its built-in modules, then the modules that installed packages
declare under its entry-point group (``unified.tasks`` for tasks, in a package's
``[options.entry_points]``); the modules a user lists under ``plugins:`` are imported by
:func:`import_plugins`. Installed packages are trusted as any installed code is; a checkpoint only names
entries, so it cannot make us import a module that the environment does not already declare.

The built-in tasks were once a top-level package ``tasks`` and are now ``unified.tasks``; a config, a
command line or a checkpoint that still lists ``tasks.detect`` under ``plugins:`` keeps working
(:func:`plugin_module`), with a warning naming the new path.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")

# Old import paths of the built-in task modules, from before they moved under the project's namespace
# (a top-level `tasks` collided with users' own tasks.py); existing configs and checkpoints name them.
MOVED_MODULES = {f"tasks.{name}": f"unified.tasks.{name}" for name in ("detect", "jdc", "jde")}


class RegistryError(KeyError):
    """Raised when a name is missing from a registry or registered twice."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it readable.
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """A named mapping from string keys to registered objects.

    Args:
        kind: What the registry holds, used in error messages ("task", "block", ...).
        default_modules: Modules imported lazily before the first lookup, so the built-in entries are
            present without an import-order dance in user code.
        entry_point_group: Entry-point group whose modules are imported after ``default_modules``, so
            an installed third-party package is found without listing it under ``plugins:``.
    """

    def __init__(
        self, kind: str, default_modules: tuple[str, ...] = (), entry_point_group: str | None = None
    ) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._origins: dict[str, str] = {}
        self._default_modules = default_modules
        self.entry_point_group = entry_point_group
        self._defaults_loaded = False

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator registering an object under ``name`` (default: its ``__name__``)."""

        def decorator(obj: T) -> T:
            self.add(name or obj.__name__, obj)  # type: ignore[attr-defined]
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        """Register ``obj`` under ``name``; a second, different object under the same name is an error."""
        origin = getattr(obj, "__module__", "?")
        if name in self._entries and self._entries[name] is not obj:
            raise RegistryError(
                f"{self.kind} {name!r} is already registered by {self._origins[name]}; "
                f"{origin} tried to register it again"
            )
        self._entries[name] = obj
        self._origins[name] = origin

    def _load_defaults(self) -> None:
        if self._defaults_loaded:
            return
        # Set first: a plugin module that looks an entry up while it is imported must not recurse here.
        self._defaults_loaded = True
        try:
            for module in self._default_modules:
                importlib.import_module(module)
            if self.entry_point_group:
                self._load_entry_points(self.entry_point_group)
        except BaseException:
            self._defaults_loaded = False  # so the next lookup reports the same failure, not a missing name
            raise

    def _load_entry_points(self, group: str) -> None:
        """Import every module that an installed package declares under ``group``.

        Built-in modules are imported first, so a package that reuses a built-in name is the one blamed.

        Raises:
            ImportError: naming the entry point and its package, whatever the plugin's import raised.
        """
        for entry in importlib.metadata.entry_points(group=group):
            try:
                entry.load()
            except Exception as exc:  # third-party code may raise anything; say which package it is
                dist = getattr(entry, "dist", None)
                package = f"installed package {dist.name!r}" if dist is not None else "an installed package"
                raise ImportError(
                    f"cannot load {self.kind} plugin {entry.name!r} = {entry.value!r}, declared by {package} "
                    f"under the entry-point group {group!r}: {type(exc).__name__}: {exc} "
                    f"(fix or uninstall that package)"
                ) from exc

    def get(self, name: str) -> T:
        """Return the object registered under ``name``.

        Raises:
            RegistryError: naming what is registered, the closest match and where entries come from.
        """
        self._load_defaults()
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(self._missing_message(name)) from None

    def _missing_message(self, name: str) -> str:
        known = sorted(self._entries)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        listing = ", ".join(f"{k} ({self._origins[k]})" for k in known) or "nothing"
        installed = (
            f"; an installed package declares its module under the entry-point group {self.entry_point_group!r}"
            if self.entry_point_group
            else ""
        )
        return (
            f"unknown {self.kind} {name!r}.{hint} Registered {self.kind}s: {listing}. "
            f"A {self.kind} from your own module is enabled by importing that module first "
            f"(for tasks: list its import path under `plugins:` in the experiment config){installed}."
        )

    def origin(self, name: str) -> str:
        """The module that registered ``name``."""
        self.get(name)
        return self._origins[name]

    def installed_names(self) -> list[str]:
        """Names registered by the default modules and the installed plugins (the entry-point group), not
        those a script or test registered on the fly."""
        modules = set(self._default_modules)
        if self.entry_point_group:
            from importlib.metadata import entry_points

            modules |= {ep.value.split(":")[0] for ep in entry_points(group=self.entry_point_group)}
        return [name for name in self.names() if self._origins[name] in modules]

    def names(self) -> list[str]:
        """All registered names, sorted."""
        self._load_defaults()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load_defaults()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load_defaults()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def plugin_module(path: str) -> str:
    """The module a plugin path means: the new path of a moved built-in module, else ``path`` itself.

    ``tasks.detect`` means ``unified.tasks.detect`` unless an importable package ``tasks`` is the user's
    own (not our ``tasks/`` folder): then it is their module, and is imported as written.
    """
    new = MOVED_MODULES.get(path)
    if new is None:
        return path
    # find_spec of a top-level name only looks the package up; none of the user's code runs.
    spec = importlib.util.find_spec(path.partition(".")[0])
    if spec is not None and spec.submodule_search_locations:
        ours = {Path(p).resolve() for p in importlib.import_module("unified.tasks").__path__}
        if ours.isdisjoint(Path(p).resolve() for p in spec.submodule_search_locations):
            return path
    return new


def import_plugins(paths: list[str] | tuple[str, ...]) -> None:
    """Import user plugin modules by dotted path so their ``@register`` decorators run.

    An old path of a built-in task module (``tasks.detect``) imports the module's new one
    (``unified.tasks.detect``) with a ``FutureWarning``; see :func:`plugin_module`.

    Raises:
        ImportError: naming the plugin path that failed and why.
    """
    for path in paths:
        module = plugin_module(path)
        if module != path:
            warnings.warn(
                f"plugin {path!r} is now {module!r}, a built-in that loads without being listed under "
                f"`plugins:`; drop it from the list (or write {module!r})",
                FutureWarning,
                stacklevel=2,
            )
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ImportError(
                f"cannot import plugin module {path!r} (listed under `plugins:` or --plugins): {exc}"
            ) from exc
