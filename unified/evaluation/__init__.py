"""Per-task evaluation: COCO box mAP (``coco``), multi-label mAP/F1 (``multilabel``), embedding TPR at
fixed FAR (``embedding``), MOT metrics (``mot``) and plots (``plots``).

Import from the submodules; this package does not import them eagerly, so that using one metric does
not pay for the others' dependencies (pandas and motmetrics, matplotlib).
"""
