"""unified: YOLOR-style unified multi-task networks (detection, JDC, JDE) on one shared representation."""

__version__ = "0.1.0"
