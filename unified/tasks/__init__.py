"""The built-in task plugins ``detect``, ``jdc`` and ``jde``, whose source is the repository's ``tasks/``.

A wheel installs ``tasks/`` here as this package (``package_dir`` in setup.cfg), so this file is not in it.
In a checkout, editable install or none, this file is what Python finds, and it points the package at the
``tasks/`` beside this ``unified/``: setuptools' editable finder would name the ``tasks/`` of the checkout
it was installed from, so a second checkout or a moved venv would mix two trees, and a checkout run without
installing (the tools put the repository on ``sys.path``) would not find the package at all.
"""

from pathlib import Path

__path__ = [str(Path(__file__).resolve().parents[2] / "tasks")]
