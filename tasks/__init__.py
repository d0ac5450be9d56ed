"""The built-in task plugins, installed as ``unified.tasks`` (see ``unified/tasks/__init__.py``).

Keep this file free of code: in a checkout ``unified/tasks/__init__.py`` runs in its place.
"""
