"""The NAB-style scorer of benchmarks/nab_score.py: the fixed points of its normalisation."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from nab_score import normalised, scaled_sigmoid, score_series

WINDOWS = [(1000, 1099), (3000, 3099)]
PROBATION = 500


def score(detections: list[int]) -> float:
    return normalised([score_series(detections, WINDOWS, PROBATION)])


def test_never_firing_scores_zero():
    assert score([]) == pytest.approx(0.0)


def test_perfect_detector_scores_hundred():
    assert score([lo for lo, _ in WINDOWS]) == pytest.approx(100.0)


def test_earlier_detection_scores_more_than_later():
    early, middle, late = score([1005, 3005]), score([1050, 3050]), score([1095, 3095])
    assert early > middle > late > 0


def test_false_positive_lowers_the_score():
    clean = score([1005, 3005])
    assert score([1005, 3005, 2000]) < clean
    # a false positive far from any window costs the full A_FP (0.11 of a window's worth)
    far = score([1005, 3005, 600])
    assert clean - far == pytest.approx(100 * 0.11 / 4, rel=1e-6)


def test_only_the_earliest_detection_in_a_window_counts():
    assert score([1005, 1006, 1090, 3005]) == pytest.approx(score([1005, 3005]))


def test_missed_window_and_probation():
    one = score_series([1005, 100], WINDOWS, PROBATION)  # 100 is in the probation period
    assert one.detected == 1 and one.false_positives == 0 and one.detections == 1
    assert 0 < normalised([one]) < 50


def test_sigmoid_shape():
    assert scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert scaled_sigmoid(0.0) == pytest.approx(0.0)
    assert scaled_sigmoid(3.0) == -1.0
