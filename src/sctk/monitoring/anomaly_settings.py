"""`[anomaly]`: which detector watches each metric, with what parameters.

The section's model lives here, with the detectors it names, and is declared to
`sctk.config` as the section `anomaly` (monitoring's plugin hook `settings_sections`), so
that config names the section without importing monitoring.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from sctk.config import Section, settings_section
from sctk.errors import ConfigError


class AnomalyOverride(Section):
    detector: str | None = Field(None, description="Detector for this metric; empty: the default.")
    params: dict[str, float | int | bool] = Field(
        default_factory=dict, description="Detector parameters for this metric."
    )


@settings_section("anomaly")
class AnomalySettings(Section):
    detector: str = Field(
        "adaptive",
        description="Anomaly detector of every metric without an override "
        "(adaptive; robust, the previous default; or three_sigma: the guide's rule).",
    )
    params: dict[str, float | int | bool] = Field(
        default_factory=dict, description="Parameters of the default detector."
    )
    metrics: dict[str, AnomalyOverride] = Field(
        default_factory=dict,
        description="Per-metric overrides: [anomaly.metrics.NAME] detector = ..., params = {...}.",
    )
    sample_seconds: float = Field(
        60.0,
        ge=0,
        le=3600,
        description="Feed the detectors the mean of each period of this many seconds (60: the "
        "1-minute means the defaults were chosen on; raw 1 Hz samples raise false alarms); "
        "0 feeds them every sample.",
    )

    @model_validator(mode="after")
    def _valid(self) -> AnomalySettings:
        # lazy: the detectors are declared when their registry is first read, and the
        # detectors' module needs this one only for its types
        from sctk.monitoring.anomaly import check_settings

        try:
            check_settings(self)
        except ConfigError as exc:
            raise ValueError(exc.message) from None
        return self
