"""Alert rules and the `[alerts]` settings section that declares them.

Two kinds of rule:

- a threshold rule compares each sample of a metric with a warning and a critical level; the
  condition must hold for `for_seconds` before an alert fires. With `on = "anomaly_score"`
  it compares the metric's anomaly score (0..1, from its anomaly detector) instead of its
  value: an alert when the score stays above a level for `for_seconds`;
- a trend rule looks at a trailing window of a metric: its variability (population standard
  deviation, in the metric's own unit, so "points" for percentages) above a limit, or its
  average sustained above a level (by default the metric's warning threshold).

Validation happens when the settings load, so `sctk config check`, `sctk config set` and every
command refuse a rule naming an unknown metric, a level outside 0..100 for a percentage, or a
warning level beyond the critical one, with one sentence naming the field.

This module imports nothing of sctk so that `sctk.config` can import it cheaply.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sctk.config import settings_section

SYSTEM_METRICS: tuple[str, ...] = (
    "cpu_percent",
    "memory_percent",
    "disk_percent",
    "net_sent_bytes_per_s",
    "net_recv_bytes_per_s",
    "sctk_cpu_percent",
    "sctk_rss_bytes",
    "load1",
)
"""The collector's metric names; rules may name these and any declared application metric."""

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,119}$")
_LABELLED_RE = re.compile(r"^(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)\{(?P<labels>.*)\}$")


def is_percent(metric: str) -> bool:
    # sctk_cpu_percent can exceed 100 on several cores (psutil counts per core)
    return metric.endswith("_percent") and metric != "sctk_cpu_percent"


def split_metric(key: str) -> tuple[str, dict[str, str]]:
    """A sample's key -> (metric, labels): 'disk_percent{path=/data}' and the collector's
    'disk_percent:/data' both give ('disk_percent', {'path': '/data'}); plain names pass."""
    match = _LABELLED_RE.match(key)
    if not match:
        name, sep, rest = key.partition(":")
        if sep and rest and _NAME_RE.match(name):
            return name, {"path" if name.startswith("disk") else "key": rest}
        return key, {}
    labels: dict[str, str] = {}
    for part in match.group("labels").split(","):
        k, sep, v = part.partition("=")
        if sep:
            labels[k.strip()] = v.strip().strip('"')
    return match.group("name"), labels


def fingerprint(rule: str, metric: str, labels: dict[str, str] | None = None) -> str:
    """A stable id of one condition: rule + metric + labels (not the severity)."""
    canonical = json.dumps([rule, metric, sorted((labels or {}).items())], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ThresholdRule(_Strict):
    """Fire when METRIC OP level holds for for_seconds (warning and critical levels)."""

    name: str = Field("", description="Rule name (default: the metric's name).")
    metric: str = Field(description="Metric the rule watches.")
    op: Literal[">", "<"] = Field(">", description="'>' fires above the levels, '<' below.")
    on: Literal["value", "anomaly_score"] = Field(
        "value",
        description="'value': the metric's samples; 'anomaly_score': the score (0..1) its "
        "anomaly detector gives each sample (0.5 at the detector's threshold).",
    )
    warning: float | None = Field(None, description="Warning level (empty: none).")
    critical: float | None = Field(None, description="Critical level (empty: none).")
    for_seconds: float = Field(
        60.0, ge=0, le=86_400, description="How long the condition must hold before it fires."
    )

    @model_validator(mode="after")
    def _levels(self) -> ThresholdRule:
        if not self.name:
            self.name = self.metric
        if self.warning is None and self.critical is None:
            raise ValueError(f"rule '{self.name}' needs a warning or a critical level")
        for level in (self.warning, self.critical):
            if level is not None and not math.isfinite(level):
                raise ValueError(f"rule '{self.name}' has a level that is not a finite number")
            if level is not None and self.on == "anomaly_score":
                if not 0 < level < 1:
                    raise ValueError(
                        f"rule '{self.name}': {level:g} is outside 0..1 for an anomaly score; "
                        "give a level between 0 and 1 (0.5 is the detector's threshold)"
                    )
            elif level is not None and is_percent(self.metric) and not 0 <= level <= 100:
                raise ValueError(
                    f"rule '{self.name}': {level:g} is outside 0..100 for the percentage "
                    f"'{self.metric}'; give a level between 0 and 100"
                )
        if self.on == "anomaly_score" and self.op != ">":
            raise ValueError(
                f"rule '{self.name}': an anomaly-score rule fires when the score is high; "
                "use op = '>'"
            )
        if self.warning is not None and self.critical is not None:
            wrong = self.warning > self.critical if self.op == ">" else self.warning < self.critical
            if wrong:
                beyond = "above" if self.op == ">" else "below"
                raise ValueError(
                    f"rule '{self.name}': the warning level {self.warning:g} is {beyond} the "
                    f"critical level {self.critical:g}; swap them"
                )
        return self

    def levels(self) -> list[tuple[str, float]]:
        """(severity, level) pairs, critical first."""
        out = []
        if self.critical is not None:
            out.append(("critical", self.critical))
        if self.warning is not None:
            out.append(("warning", self.warning))
        return out

    def crossed(self, value: float, level: float) -> bool:
        return value > level if self.op == ">" else value < level


class TrendRule(_Strict):
    """Fire (as a warning) when a metric's trailing window misbehaves."""

    name: str = Field("", description="Rule name (default: '<metric>_<kind>').")
    metric: str = Field(description="Metric the rule watches.")
    kind: Literal["variability", "sustained"] = Field(
        description="'variability': standard deviation over the window above `limit`; "
        "'sustained': average over the window above `limit`."
    )
    limit: float | None = Field(
        None,
        description="The limit; for 'sustained' empty means the metric's warning threshold.",
    )
    window_seconds: float = Field(600.0, ge=10, le=86_400, description="The trailing window.")
    severity: Literal["warning", "critical"] = Field("warning", description="Alert severity.")

    @model_validator(mode="after")
    def _named(self) -> TrendRule:
        if not self.name:
            self.name = f"{self.metric}_{self.kind}"
        if self.kind == "variability" and self.limit is None:
            raise ValueError(f"trend rule '{self.name}' needs a limit")
        if self.limit is not None and not math.isfinite(self.limit):
            raise ValueError(f"trend rule '{self.name}' has a limit that is not a finite number")
        if self.limit is not None and is_percent(self.metric) and not 0 <= self.limit <= 100:
            raise ValueError(
                f"trend rule '{self.name}': {self.limit:g} is outside 0..100 for the percentage "
                f"'{self.metric}'; give a limit between 0 and 100"
            )
        return self


def _default_rules() -> list[ThresholdRule]:
    return [
        ThresholdRule(metric="cpu_percent", warning=70, critical=90),
        ThresholdRule(metric="memory_percent", warning=80, critical=95),
        ThresholdRule(metric="disk_percent", warning=85, critical=95),
    ]


def _default_trends() -> list[TrendRule]:
    return [
        TrendRule(metric="cpu_percent", kind="variability", limit=20, window_seconds=600),
        TrendRule(metric="cpu_percent", kind="sustained", window_seconds=900),
        TrendRule(metric="memory_percent", kind="sustained", window_seconds=900),
    ]


class SmtpSettings(_Strict):
    host: str = Field("", description="SMTP server; empty disables the e-mail channel.")
    port: int = Field(25, ge=1, le=65535, description="SMTP port.")
    starttls: bool = Field(False, description="Upgrade the connection with STARTTLS.")
    username: str = Field(
        "",
        description="SMTP login; its password is kept encrypted in the database "
        "('sctk alerts set-smtp-password').",
    )
    sender: str = Field("sctk@localhost", description="From address.")
    to: list[str] = Field(default_factory=list, description="Recipients.")
    timeout_seconds: float = Field(10.0, gt=0, le=120, description="Connect and send timeout.")


@settings_section("alerts")
class AlertSettings(_Strict):
    """`[alerts]`: rules, notification policy and channels."""

    rules: list[ThresholdRule] = Field(
        default_factory=_default_rules, description="Threshold rules (the guide's defaults)."
    )
    trend_rules: list[TrendRule] = Field(
        default_factory=_default_trends, description="Trend rules over a trailing window."
    )
    app_metrics: list[str] = Field(
        default_factory=list,
        description="Application metric names rules may name besides the collector's own.",
    )
    cooldown_seconds: float = Field(
        300.0,
        ge=0,
        le=86_400,
        description="A firing alert resolves only after its condition stayed clear this long; "
        "a crossing within it is the same alert, so flapping sends nothing new.",
    )
    repeat_interval_seconds: float = Field(
        3600.0, ge=60, le=7 * 86_400, description="Reminder period of an unacknowledged alert."
    )
    anomaly_resolve_seconds: float = Field(
        900.0, ge=0, le=86_400, description="An anomaly alert not seen again this long resolves."
    )
    channels: list[Literal["log", "webhook", "email"]] = Field(
        default_factory=lambda: ["log", "webhook", "email"],
        description="Channels alerts go to; webhook and email only once configured "
        "('sctk alerts set-webhook', [alerts.smtp] host).",
    )
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, le=120, description="Timeout of one webhook request."
    )
    max_attempts: int = Field(4, ge=1, le=20, description="Delivery attempts per channel.")
    backoff_seconds: float = Field(
        2.0, ge=0, le=600, description="First retry delay; doubles with each attempt."
    )
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)

    @field_validator("app_metrics")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not _NAME_RE.match(name):
                raise ValueError(
                    f"'{name}' is not a metric name; use lower-case letters, digits and '_'"
                )
        return names

    @model_validator(mode="after")
    def _known(self) -> AlertSettings:
        known = self.known_metrics()
        for rule in [*self.rules, *self.trend_rules]:
            if rule.metric not in known:
                raise ValueError(
                    f"rule '{rule.name}' names the unknown metric '{rule.metric}'; use one of "
                    f"{', '.join(sorted(known))}, or declare it in alerts.app_metrics"
                )
        names = [r.name for r in [*self.rules, *self.trend_rules]]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"rule names must be unique; '{dup[0]}' is used twice")
        return self

    def known_metrics(self) -> set[str]:
        return set(SYSTEM_METRICS) | set(self.app_metrics)

    def warning_level(self, metric: str) -> float | None:
        for rule in self.rules:
            if rule.metric == metric and rule.warning is not None:
                return rule.warning
        return None
