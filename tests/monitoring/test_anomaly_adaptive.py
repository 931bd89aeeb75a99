"""The adaptive default detector: level shifts learnt at once, bursty counts, cycles, score."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sctk.errors import ConfigError
from sctk.monitoring.anomaly import (
    DEFAULT_DETECTOR,
    AdaptiveDetector,
    RobustDetector,
    ThreeSigma,
    detector_for,
    make_detector,
)
from sctk.monitoring.anomaly_settings import AnomalySettings

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC


def run(det, xs, step=60.0, t0=T0) -> list[tuple[int, object]]:
    out = []
    for i, x in enumerate(xs):
        found = det.update(t0 + i * step, float(x))
        if found is not None:
            out.append((i, found))
    return out


def test_adaptive_is_the_default_and_the_others_stay_selectable():
    assert DEFAULT_DETECTOR == "adaptive" == AnomalySettings().detector
    det = detector_for("cpu_percent", AnomalySettings(sample_seconds=0))
    assert isinstance(det, AdaptiveDetector) and det.metric == "cpu_percent"
    assert isinstance(make_detector("robust"), RobustDetector)
    assert isinstance(make_detector("three_sigma"), ThreeSigma)


def test_persistent_level_shift_is_one_anomaly_then_none_within_the_learning_time():
    rng = np.random.default_rng(1)
    x = rng.normal(40, 2, 3000)
    x[1000:] *= 2  # a misconfiguration doubles CPU for days: level and noise
    det = AdaptiveDetector()
    found = run(det, x)
    assert len(found) == 1
    i, a = found[0]
    assert a.kind == "level shift" and 1000 <= i <= 1000 + det.confirm
    assert a.start == T0 + 1000 * 60
    # learnt: the samples after the report score as normal again within a few samples
    det = AdaptiveDetector()
    scores = []
    for k, v in enumerate(x):
        det.update(T0 + k * 60, float(v))
        scores.append(det.score)
    assert max(scores[1000 + 30 :]) < 0.5 < max(scores[1000:1004])


def test_bursty_poisson_counts_with_a_rising_level_raise_no_alarm():
    rng = np.random.default_rng(2)
    n = 4000
    rate = np.linspace(5, 400, n)  # traffic grows eighty-fold over the run
    x = rng.poisson(rate * rng.gamma(20.0, 1 / 20.0, n))  # over-dispersed: bursty
    assert run(AdaptiveDetector(), x) == []


def test_flat_series_then_a_step_is_one_alarm():
    x = [4.0] * 200 + [9.0] * 400
    det = AdaptiveDetector()
    found = run(det, x)
    # reported once, at the sample that confirms it (confirm samples out in a row)
    assert [(i, a.kind) for i, a in found] == [(200 + det.confirm - 1, "level shift")]
    # a quantised blip of one step on a flat count is not news; a far one is
    blips = [4.0] * 300
    blips[150] = 3.0
    assert run(AdaptiveDetector(), blips) == []
    blips[250] = 0.0  # every worker gone for one sample
    assert [(i, a.kind) for i, a in run(AdaptiveDetector(), blips)] == [(251, "spike")]


def test_score_is_in_zero_one_and_monotone_in_the_deviation():
    rng = np.random.default_rng(3)
    base = rng.normal(100, 5, 300).tolist()
    scores = []
    for dev in [0, 1, 2, 5, 10, 20, 50, 100, 1e3, 1e6, 1e12]:
        det = AdaptiveDetector()
        run(det, base)
        expected = det._level  # the forecast (no daily profile within the first day)
        det.update(T0 + 300 * 60, expected + dev)
        scores.append(det.score)
        det.reset()
        assert det.score == 0.0
        run(det, base)
        det.update(T0 + 300 * 60, expected - dev)  # the other side scores the same
        assert det.score == pytest.approx(scores[-1])
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores == sorted(scores) and scores[0] < 0.1 and scores[-1] > 0.999


def test_daily_cycle_is_learnt_and_a_break_of_it_is_seen():
    rng = np.random.default_rng(4)
    step = 600.0  # every 10 minutes, three weeks
    n = int(21 * 86400 / step)
    t = T0 + np.arange(n) * step
    hour = (t % 86400) / 3600
    cycle = 30 * np.sin(2 * np.pi * hour / 24) + 25 * (hour > 9) * (hour < 10)  # 9:00 burst
    x = 100 + cycle + rng.normal(0, 1, n)
    found = run(AdaptiveDetector(), x, step=step)
    assert [i for i, _ in found if i > n // 3] == []  # quiet once the cycle is known
    # one day the cycle turns upside down: a break of the learnt profile
    broken = x.copy()
    day, one = int(18 * 86400 / step), int(86400 / step)
    broken[day : day + one] = 100 - cycle[day : day + one] + rng.normal(0, 1, one)
    late = [i for i, _ in run(AdaptiveDetector(), broken, step=step) if i > n // 3]
    assert late and day <= late[0] <= day + one


def test_heavy_tailed_noise_is_quiet_but_a_real_spike_is_not():
    rng = np.random.default_rng(6)
    x = 50 + 2 * rng.standard_t(4, 6000)  # fat tails: 10-sigma values now and then
    assert len(run(AdaptiveDetector(), x)) <= 3  # a day of samples, 100 hours
    assert len(run(ThreeSigma(), x)) > 50
    x[5000] += 400
    assert any(4990 <= i <= 5003 for i, _ in run(AdaptiveDetector(), x))


def test_slow_leak_is_caught_once():
    rng = np.random.default_rng(8)
    x = rng.normal(60, 0.5, 3000)
    x[1500:2100] += np.linspace(0, 15, 600)  # a leak of 30 sigma over ten hours, then held
    x[2100:] += 15
    found = run(AdaptiveDetector(), x)
    assert [a.kind for _, a in found] == ["drift"]
    assert 1500 < found[0][0] < 1900


def test_costs_stay_bounded_and_bad_parameters_are_one_sentence():
    det = AdaptiveDetector()
    rng = np.random.default_rng(7)
    run(det, rng.normal(0, 1, 5000))
    held = len(det._day) + len(det._week) + len(det._run) + len(det._outs)
    assert held <= det.capacity
    for params, words in (
        ({"alpha": 1.5}, "'alpha' must be at most 1"),
        ({"threshold": 0}, "'threshold' must be a number greater than 0"),
        ({"confirm": 0}, "'confirm' must be a whole number of at least 1"),
        ({"windw": 3}, "no parameter 'windw'"),
    ):
        with pytest.raises(ConfigError, match=words):
            make_detector("adaptive", **params)
    assert math.isfinite(det.score)


def test_a_series_that_wanders_and_comes_back_is_flagged_once_but_a_leak_still_is():
    rng = np.random.default_rng(9)
    n = 7000
    x = 50 + rng.normal(0, 0.5, n)
    # like weather or demand: every 400 samples the series leaves its level by 8 (16 sigma)
    # for 150 samples, then comes back
    bump = 8 * np.sin(np.pi * np.arange(150) / 150)
    for start in range(300, 5000, 400):
        x[start : start + 150] += bump
    # then a leak that leaves its level faster and further than the wandering ever did,
    # and stays (what it must show to stand out from a series that wanders like this)
    x[5500:5800] += np.linspace(0, 40, 300)
    x[5800:] += 40
    found = run(AdaptiveDetector(), x)
    wandering = [i for i, a in found if i < 5400]
    assert len(wandering) == 1  # the first excursion is news; the ones like it are not
    assert run(AdaptiveDetector(drift_margin=0), x[:5400]).__len__() > 5  # without the margin
    assert [a.kind for i, a in found if i >= 5400] == ["drift"]


def test_a_level_shift_of_a_daily_series_is_seen():
    # one sample a day: no daily profile (it would hold yesterday's residual and forecast
    # yesterday's value, so that a lasting shift looked like a single jump)
    rng = np.random.default_rng(10)
    x = 20 + rng.normal(0, 1, 1500)
    x[1000:] += 12
    det = AdaptiveDetector()
    found = run(det, x, step=86400.0)
    assert [(a.kind, 1000 <= i <= 1003) for i, a in found] == [("level shift", True)]
    assert det._day == [0.0] * 24  # nothing learnt in the bin every sample falls in
    hourly = AdaptiveDetector()
    run(hourly, x, step=3600.0)
    assert any(hourly._day)


def test_two_outliers_in_a_row_are_a_spike_where_one_would_need_to_be_further():
    rng = np.random.default_rng(11)
    x = 50 + rng.normal(0, 1, 2000)
    det = AdaptiveDetector()
    run(det, x[:1000])
    scale = det._scale
    lone = x.copy()
    lone[1500] = det._level + 6 * scale * det.threshold / 5  # beyond the threshold only
    assert run(AdaptiveDetector(), lone) == []
    pair = lone.copy()
    pair[1501] = pair[1500]
    assert [(i, a.kind) for i, a in run(AdaptiveDetector(), pair)] == [(1502, "spike")]


def test_a_small_lasting_shift_is_caught_by_the_cusum_where_the_level_would_absorb_it():
    # 4 sigma: under the threshold of an out sample, so no level shift is confirmed; with the
    # drift test off, only the cumulative sum of the residuals can see it
    rng = np.random.default_rng(12)
    x = 50 + rng.normal(0, 1, 3000)
    x[2000:] += 4
    found = run(AdaptiveDetector(drift_threshold=0), x)
    assert [(a.kind, 2000 <= i <= 2030) for i, a in found] == [("drift", True)]
    assert "lasting shift" in found[0][1].message
    assert run(AdaptiveDetector(drift_threshold=0, cusum_h=0), x) == []
    # noise alone sums to nothing
    assert run(AdaptiveDetector(drift_threshold=0), x[:2000]) == []


def test_a_wider_spread_is_seen_by_the_short_against_the_long_scale():
    # the noise three times wider for 100 samples; the threshold set out of reach, so that
    # no out sample (hence no variance count) can see it: only the ratio of a quick mean
    # absolute residual to the scale does
    rng = np.random.default_rng(22)
    x = 50 + rng.normal(0, 1, 3000)
    x[2000:2100] += 3 * rng.normal(0, 1, 100)
    found = run(AdaptiveDetector(threshold=50), x)
    assert [(a.kind, 2000 <= i <= 2100) for i, a in found] == [("variance", True)]
    assert run(AdaptiveDetector(threshold=50, variance_ratio=0), x) == []
    assert run(AdaptiveDetector(threshold=50), x[:2000]) == []


def test_a_second_step_while_relearning_is_the_same_episode():
    # a deploy that settles in two steps is one episode: the forecast is still relearning
    # the first change when the second comes (relearn_samples), later it is news again
    det = AdaptiveDetector()
    soon = [4.0] * 200 + [9.0] * 50 + [15.0] * 300
    assert [a.kind for _, a in run(det, soon)] == ["level shift"]
    later = [4.0] * 200 + [9.0] * (det.relearn_samples + 50) + [15.0] * 300
    assert [a.kind for _, a in run(AdaptiveDetector(), later)] == ["level shift"] * 2
