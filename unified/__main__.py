"""``python -m unified COMMAND ...``: the ``unified`` command (see :mod:`unified.commands`)."""

if __name__ == "__main__":  # imported, e.g. by a walk over the package, it runs nothing
    from unified.commands import main

    raise SystemExit(main())
