"""unified: YOLOR-style unified multi-task networks (detection, JDC, JDE) on one shared representation."""

__version__ = "0.1.0"

__all__ = ["Model", "Result", "__version__", "build_model", "load"]


def __getattr__(name: str):  # noqa: ANN202  (PEP 562: resolved lazily so `import unified` stays light)
    """``unified.Model`` and ``unified.Result`` (:mod:`unified.api`), ``unified.load`` and
    ``unified.build_model`` (:mod:`unified.model`), imported on first use."""
    if name in ("Model", "Result"):
        from unified import api

        return getattr(api, name)
    if name in ("load", "build_model"):
        from unified import model

        return getattr(model, name)
    raise AttributeError(f"module 'unified' has no attribute {name!r}")
