"""The packaged configs (``models/*.yaml``, ``experiments/*.yaml``), whose source is the repository's ``configs/``.

A wheel installs ``configs/`` here as this package (``package_dir`` in setup.cfg), so this file is not in it.
In a checkout, editable install or none, this file is what Python finds, and it points the package at the
``configs/`` beside this ``unified/``, as ``unified/tasks/__init__.py`` does for ``tasks/``. Look configs up
by name with :mod:`unified.packaged_configs`.
"""

from pathlib import Path

__path__ = [str(Path(__file__).resolve().parents[2] / "configs")]
