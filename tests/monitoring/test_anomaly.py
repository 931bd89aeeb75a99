"""Streaming anomaly detectors: the guide's 3-sigma rule, the robust detector (the previous
default) and the factories (the adaptive default has tests of its own)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sctk import config
from sctk.errors import ConfigError, SctkError
from sctk.monitoring.anomaly import (
    AdaptiveDetector,
    Anomaly,
    Averaged,
    DetectorSet,
    RobustDetector,
    ThreeSigma,
    detector_for,
    make_detector,
)
from sctk.monitoring.anomaly_settings import AnomalyOverride, AnomalySettings

T0 = 1_767_225_600.0


def run(det, xs, step=10.0, t0=T0) -> list[tuple[int, Anomaly]]:
    out = []
    for i, x in enumerate(xs):
        found = det.update(t0 + i * step, float(x))
        if found is not None:
            out.append((i, found))
    return out


def test_flat_quantised_series_with_one_spike_is_one_anomaly():
    rng = np.random.default_rng(1)
    x = np.full(3000, 12.0)
    blips = rng.random(3000) < 0.03  # a connection opened or closed now and then
    x[blips] += rng.choice([-1.0, 1.0], blips.sum())
    x[2000] = 40.0
    found = run(RobustDetector(), x)
    assert len(found) == 1, found
    i, a = found[0]
    # reported once the value has settled back (3 samples), which tells a spike from a shift
    assert a.kind == "spike" and a.start == T0 + 2000 * 10 and 2001 <= i <= 2010
    assert a.value == 40.0 and a.score > 10
    # the guide's rule flags the blips: the standard deviation of a flat window is tiny
    assert len(run(ThreeSigma(), x)) > 20


def test_perfectly_flat_series_then_one_step_change_is_noticed_once():
    x = np.concatenate([np.full(500, 4.0), np.full(1500, 3.0)])  # one worker lost
    found = run(RobustDetector(), x)
    assert [a.kind for _, a in found] == ["level shift"]


def test_white_noise_is_quiet_and_far_quieter_than_three_sigma():
    x = np.random.default_rng(2).normal(50, 5, 10_000)
    robust = run(RobustDetector(), x)
    guide = run(ThreeSigma(), x)
    assert len(robust) <= 1
    assert len(guide) >= 15  # about 0.3% of the samples
    assert len(robust) * 10 < len(guide)


def test_level_shift_is_one_anomaly_then_quiet_at_the_new_level():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(30, 2, 1000), rng.normal(55, 2, 4000)])
    found = run(RobustDetector(), x)
    assert len(found) == 1, found
    i, a = found[0]
    assert a.kind == "level shift" and 1000 <= i <= 1010
    assert a.start == T0 + 1000 * 10
    new_level = float(a.message.split(" to ")[1].split()[0])
    assert 52 < new_level < 58


def test_return_to_the_old_level_is_a_recovery_not_an_anomaly():
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(30, 2, 1000), rng.normal(55, 2, 300), rng.normal(30, 2, 1000)])
    found = run(RobustDetector(cooldown=0), x)
    assert [a.kind for _, a in found] == ["level shift"]


def test_flapping_for_ten_minutes_is_one_anomaly_per_cooldown_at_most():
    rng = np.random.default_rng(5)
    x = rng.normal(40, 2, 3600)  # one hour at 1 Hz
    flap = np.arange(1200, 1800)  # ten minutes crossing every few seconds
    x[flap[(flap // 3) % 2 == 0]] += 40
    default = run(RobustDetector(), x, step=1.0)
    assert len(default) == 1  # the default cooldown (900 s) covers the whole episode
    assert 1200 <= default[0][0] < 1260
    short = run(RobustDetector(cooldown=120), x, step=1.0)
    assert 1 <= len(short) <= math.ceil(600 / 120)
    times = [i for i, _ in short]
    assert all(b - a >= 120 for a, b in zip(times, times[1:], strict=False))
    assert len(run(ThreeSigma(), x, step=1.0)) > 10


def test_slow_leak_is_caught():
    rng = np.random.default_rng(6)
    n = 3 * 1440  # three days at one sample a minute
    x = 55 + 0.2 * rng.standard_normal(n)
    start = 2 * 1440
    x[start:] += np.arange(n - start) * (2.0 / 60)  # 2 points an hour
    x = np.round(x, 1)
    found = run(RobustDetector(), x, step=60.0)
    assert found, "the leak was not caught"
    i, a = found[0]
    assert start < i < start + 240  # within four hours
    assert a.kind in ("drift", "level shift")


def test_variance_change_is_caught_once():
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.normal(20, 1, 2000), rng.normal(20, 5, 600), rng.normal(20, 1, 2000)])
    found = run(RobustDetector(), x, step=60.0)
    assert found and 2000 <= found[0][0] < 2060
    assert all(2000 <= i < 2000 + 15 + 600 for i, _ in found)  # nothing after the episode
    assert len(found) <= 600 // 15 + 1  # at most one per cooldown (15 samples)


def test_state_is_bounded_by_the_windows():
    det = RobustDetector(
        window=60, min_points=20, variance_window=20, drift_blocks=12, drift_run=4, drift_history=6
    )
    rng = np.random.default_rng(8)
    worst = 0
    for i in range(30_000):
        # noise, shifts, a variance burst and long flapping: whatever comes, it stays bounded
        x = rng.normal(10 * ((i // 5000) % 3), 1 + 4 * ((i // 7000) % 2))
        if 20_000 <= i < 25_000 and i % 4 < 2:
            x += 50
        det.update(T0 + i, x)
        worst = max(worst, det.state_size)
    assert worst <= det.capacity == 3 * 60 + 30 + 3 * 20 + 15 + 12 + 60
    assert det.capacity < 400  # a few kB whatever the run length


def test_reset_forgets_everything():
    x = np.random.default_rng(9).normal(0, 1, 500)
    x[400] = 30
    det = RobustDetector()
    first = [(i, a.kind) for i, a in run(det, x)]
    det.reset()
    assert [(i, a.kind) for i, a in run(det, x)] == first == [(403, "spike")]


def test_three_sigma_is_the_guides_rule_without_cooldown():
    det = ThreeSigma(window=60)
    x = [5.0] * 100 + [6.0, 6.0, 6.0]
    found = run(det, x)
    # a flat window has sigma 0: the first change is flagged, and so is the next sample
    assert [i for i, _ in found][:2] == [100, 101]
    assert found[0][1].score == math.inf


def test_anomaly_to_dict_is_json_ready_in_utc():
    a = Anomaly(T0, T0 + 10, 1.0, 9.0, "spike", "spike to 1.", "cpu_percent")
    d = a.to_dict()
    assert d["start"] == "2026-01-01T00:00:00+00:00" and d["flagged"].endswith("+00:00")


def test_factories_and_per_metric_overrides():
    settings = AnomalySettings(
        sample_seconds=0,  # every sample to the detector (the service averages 60 s)
        params={"cooldown": 300},
        metrics={"cpu_percent": AnomalyOverride(detector="three_sigma", params={"window": 120})},
    )
    cpu = detector_for("cpu_percent", settings)
    mem = detector_for("memory_percent", settings)
    assert isinstance(cpu, ThreeSigma) and cpu.window == 120 and cpu.metric == "cpu_percent"
    assert isinstance(mem, AdaptiveDetector) and mem.cooldown == 300
    assert isinstance(make_detector("robust", window=200), RobustDetector)
    x = [0.0] * 100 + [9.0]
    assert run(mem, x) == [] and run(cpu, x)[0][1].metric == "cpu_percent"


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: make_detector("robust", window=-5), "'window' must be a whole number"),
        (lambda: make_detector("three_sigma", window=-1), "'window' must be a whole number"),
        (lambda: make_detector("robust", threshold=0), "'threshold' must be a number"),
        (lambda: make_detector("robust", cooldown=float("nan")), "'cooldown'"),
        (lambda: make_detector("robust", min_points=500), "cannot exceed 'window'"),
        (lambda: make_detector("isolation_forest"), "Unknown anomaly detector 'isolation_forest'"),
        (lambda: make_detector("robust", windw=10), "no parameter 'windw'"),
    ],
)
def test_bad_parameters_are_one_clear_sentence(call, words):
    with pytest.raises(ConfigError) as exc:
        call()
    message = exc.value.message
    assert words in message and message.count(". ") == 0 and message.endswith((".", "?"))
    assert isinstance(exc.value, SctkError)


def test_unknown_metric_override_is_named_with_a_suggestion():
    from sctk.monitoring.anomaly import check_settings

    settings = AnomalySettings(metrics={"cpu_precent": AnomalyOverride(params={"threshold": 6})})
    check_settings(settings)  # without a list of metrics there is nothing to check against
    with pytest.raises(
        ConfigError, match="unknown metric 'cpu_precent'; did you mean 'cpu_percent'"
    ):
        check_settings(settings, known_metrics={"cpu_percent", "memory_percent"})
    with pytest.raises(ConfigError, match="Unknown metric 'disk'"):
        detector_for("disk", settings, known_metrics={"cpu_percent"})


def test_bad_settings_in_the_file_name_the_file(tmp_path):
    (tmp_path / "sctk.toml").write_text(
        '[anomaly]\ndetector = "robust"\n[anomaly.metrics.cpu_percent]\n'
        'detector = "three_sigma"\nparams = {window = -5}\n'
    )
    with pytest.raises(ConfigError) as exc:
        config.load(tmp_path)
    assert "sctk.toml" in exc.value.message
    assert "metric 'cpu_percent'" in exc.value.message and "'window'" in exc.value.message
    (tmp_path / "sctk.toml").write_text('[anomaly]\ndetector = "magic"\n')
    with pytest.raises(ConfigError, match="Unknown anomaly detector 'magic'"):
        config.load(tmp_path)
    (tmp_path / "sctk.toml").write_text(
        "[anomaly]\nsample_seconds = 0\n[anomaly.params]\ncooldown = 60\n"
        "[anomaly.metrics.jobs_queued]\nparams = {threshold = 6}\n"
    )
    loaded = config.load(tmp_path).settings.anomaly
    det = detector_for("jobs_queued", loaded)
    assert det.cooldown == 60 and det.threshold == 6  # the override adds to the defaults


def test_detector_set_keeps_one_detector_per_metric():
    settings = AnomalySettings(
        sample_seconds=0, metrics={"cpu_percent": AnomalyOverride(detector="three_sigma")}
    )
    bank = DetectorSet(settings, known_metrics={"cpu_percent", "jobs_queued"})
    flagged = {"cpu_percent": 0, "jobs_queued": 0}
    for i in range(200):
        for metric in flagged:
            x = 9.0 if i == 150 else 0.0
            if bank.update(metric, T0 + i, x) is not None:
                flagged[metric] += 1
    assert flagged == {"cpu_percent": 1, "jobs_queued": 1}
    assert isinstance(bank.detectors["cpu_percent"], ThreeSigma)
    assert isinstance(bank.detectors["jobs_queued"], AdaptiveDetector)
    with pytest.raises(ConfigError, match="Unknown metric 'disk'"):
        bank.update("disk", T0, 1.0)
    with pytest.raises(ConfigError, match="unknown metric 'cpu_percent'"):
        DetectorSet(settings, known_metrics={"memory_percent"})


def test_one_hertz_samples_can_be_fed_as_minute_means(tmp_path):
    rng = np.random.default_rng(10)
    x = rng.normal(30, 6, 6 * 3600)  # six hours at 1 Hz
    x[4 * 3600 :] += 20  # a lasting shift after four hours
    settings = AnomalySettings(sample_seconds=60)
    det = detector_for("cpu_percent", settings)
    assert isinstance(det, Averaged) and det.metric == "cpu_percent"
    found = run(det, x, step=1.0)
    assert [a.kind for _, a in found] == ["level shift"]
    i, a = found[0]
    assert a.flagged == T0 + i and 4 * 3600 <= i <= 4 * 3600 + 10 * 60
    assert a.start == T0 + 4 * 3600 and a.metric == "cpu_percent"
    (tmp_path / "sctk.toml").write_text("[anomaly]\nsample_seconds = -1\n")
    with pytest.raises(ConfigError, match="'anomaly.sample_seconds'.*greater than or equal to 0"):
        config.load(tmp_path)
