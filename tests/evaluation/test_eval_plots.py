"""Evaluation plots are written as PNG files and reject mismatched inputs."""

from __future__ import annotations

import numpy as np
import pytest

from unified.evaluation.plots import plot_per_class_ap, plot_pr_curve

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_pr_curve_png(tmp_path):
    recall = np.linspace(0, 1, 101)
    precision = np.stack([1 - 0.5 * recall, np.full(101, np.nan), 1 - recall**2], axis=1)
    path = plot_pr_curve(recall, precision, ["a", "b", "c"], tmp_path / "plots" / "pr.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="3 classes but 2 names"):
        plot_pr_curve(recall, precision, ["a", "b"], tmp_path / "x.png")


def test_pr_curve_with_many_classes_and_with_none_defined(tmp_path):
    recall = np.linspace(0, 1, 11)
    many = plot_pr_curve(
        recall, np.random.default_rng(0).random((11, 30)), [str(i) for i in range(30)], tmp_path / "m.png"
    )
    empty = plot_pr_curve(recall, np.full((11, 2), np.nan), ["a", "b"], tmp_path / "e.png")
    assert many.read_bytes()[:8] == PNG_MAGIC and empty.read_bytes()[:8] == PNG_MAGIC


def test_per_class_ap_png(tmp_path):
    path = plot_per_class_ap({0: 0.5, 1: float("nan")}, ["person", "car"], tmp_path / "ap.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert plot_per_class_ap([0.1, 0.9], ["a", "b"], tmp_path / "ap2.png").is_file()
    with pytest.raises(ValueError, match="2 AP values for 3 class names"):
        plot_per_class_ap([0.1, 0.9], ["a", "b", "c"], tmp_path / "bad.png")
