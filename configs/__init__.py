"""The packaged model and experiment configs, installed as ``unified.configs`` (see ``unified/configs/__init__.py``).

Keep this file free of code: in a checkout ``unified/configs/__init__.py`` runs in its place.
"""
