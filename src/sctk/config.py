"""Typed settings, layered: defaults < <home>/sctk.toml < SCTK_* environment < command-line flags.

The layers are merged here (rather than left to pydantic-settings' own source chain) so that
every value can say where it came from, and so that an error names the file or the
environment variable the bad value was read from.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from sctk import tomltext
from sctk.errors import ConfigError
from sctk.registry import Registry

if TYPE_CHECKING:  # types only: these sections' models live with their domain (see below)
    from sctk.monitoring.anomaly_settings import AnomalySettings
    from sctk.monitoring.rules import AlertSettings

CONFIG_FILE_NAME = "sctk.toml"
# owner-only: the file may hold a database URL with its password
CONFIG_FILE_MODE = 0o600


def default_home() -> Path:
    """The data directory used when neither --home nor SCTK_HOME names one."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "sctk"


class Section(BaseModel):
    """One table of the settings ([server], [backup], ...): unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# Sections whose model lives with its domain, on a floor above this module: Settings names
# each (so its place in the file, the reference and `config show` is fixed here) by the name
# of its model, and the domain declares the model with `@settings_section(NAME)` in the
# module its plugin's `settings_sections` hook imports. Settings is completed with them the
# first time it is used (`_complete`), so config imports no domain.
DOMAIN_SECTIONS = {"alerts": "AlertSettings", "anomaly": "AnomalySettings"}
SECTIONS: Registry[type[BaseModel]] = Registry("settings section", "settings_sections")


def settings_section(name: str):
    """Declare the decorated model as the settings section NAME (one of DOMAIN_SECTIONS)."""

    def declare(model: type[BaseModel]) -> type[BaseModel]:
        if name not in DOMAIN_SECTIONS:
            raise ValueError(
                f"{model.__module__}.{model.__name__} declares the settings section '{name}', "
                f"which Settings does not name; sections left to a domain: "
                f"{', '.join(DOMAIN_SECTIONS)}."
            )
        SECTIONS.add(name, model, model.__module__)
        return model

    return declare


def _domain_section(name: str) -> type[BaseModel]:
    if name not in SECTIONS:
        raise ConfigError(
            f"No model declares the settings section [{name}]: the plugin of its domain did "
            "not load; reinstall sctk."
        )
    return SECTIONS[name]


class ServerSettings(Section):
    host: str = Field("127.0.0.1", description="Address the API binds to.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port of the API.")
    workers: int = Field(1, ge=1, le=64, description="Number of uvicorn worker processes.")
    tls_cert: Path | None = Field(None, description="PEM certificate chain for HTTPS.")
    tls_key: Path | None = Field(None, description="PEM private key for HTTPS.")
    insecure: bool = Field(
        False, description="Allow plain HTTP on a non-loopback address (the audit flags it)."
    )


class LogSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest level written to the log file and the console."
    )
    max_bytes: int = Field(
        10 * 1024 * 1024, ge=64 * 1024, description="Size at which sctk.log is rotated."
    )
    backup_count: int = Field(5, ge=1, le=100, description="Rotated log files kept.")


class HealthSettings(Section):
    disk_warning_free_percent: float = Field(
        15.0, gt=0, lt=100, description="Free disk below this percentage is a WARNING."
    )
    disk_critical_free_percent: float = Field(
        5.0, gt=0, lt=100, description="Free disk below this percentage is CRITICAL."
    )

    @model_validator(mode="after")
    def _ordered(self) -> HealthSettings:
        if self.disk_critical_free_percent >= self.disk_warning_free_percent:
            raise ValueError(
                "disk_critical_free_percent must be lower than disk_warning_free_percent"
            )
        return self


class DatabaseSettings(Section):
    connect_timeout: int = Field(
        3, ge=1, le=120, description="Seconds to wait for PostgreSQL before giving up."
    )
    busy_timeout_ms: int = Field(
        10_000, ge=0, description="How long SQLite waits on a locked database (ms)."
    )
    timeout_seconds: float = Field(
        3.0,
        ge=0.5,
        le=300,
        description="Seconds PostgreSQL may take to answer a ping, hand out a pooled "
        "connection or acknowledge data before it is reported unavailable (503).",
    )
    statement_timeout_seconds: float = Field(
        30.0,
        ge=0,
        le=86_400,
        description="Seconds a PostgreSQL statement may run before the server cancels it "
        "(the client gives up timeout_seconds later); 0: no limit.",
    )


class SecuritySettings(Section):
    jwt_ttl_minutes: int = Field(15, ge=1, le=24 * 60, description="Lifetime of a login JWT.")
    lockout_threshold: int = Field(
        5,
        ge=1,
        le=100,
        description="Failed logins for one account from one address within the window that "
        "start delaying that address.",
    )
    lockout_window_minutes: int = Field(
        15, ge=1, le=24 * 60, description="Window in which failed logins are counted."
    )
    lockout_minutes: int = Field(
        30,
        ge=0,
        le=7 * 24 * 60,
        description="Longest lockout delay (and how long an account lock lasts); 0 keeps a "
        "lock until an admin unlocks the account.",
    )
    lockout_delay_seconds: int = Field(
        30,
        ge=1,
        le=24 * 3600,
        description="First delay once one address reaches lockout_threshold failures for one "
        "account; each further failure doubles it, up to lockout_minutes.",
    )
    account_lockout_threshold: int = Field(
        100,
        ge=1,
        le=100_000,
        description="Failed logins for one account within the window, from all addresses "
        "together, that lock it for every address but those it logged in from recently.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For "
        "names the client; empty trusts none.",
    )
    rate_limit_per_minute: int = Field(
        600, ge=1, description="Requests per minute allowed to one identity (token bucket)."
    )
    client_rate_limit_per_minute: int = Field(
        1200, ge=1, description="Requests per minute allowed from one client address."
    )
    rate_limit_burst: int = Field(
        60, ge=1, description="Requests a bucket may take at once before the rate applies."
    )
    auth_cache_seconds: float = Field(
        2.0,
        ge=0,
        le=60,
        description="How long a verified bearer credential is trusted without a database "
        "lookup; a revocation made by another process takes effect within this time.",
    )
    max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest request body the API accepts (bytes)."
    )
    dormant_days: int = Field(
        90, ge=1, description="An account with no login for this many days is dormant."
    )
    password_max_age_days: int = Field(
        365, ge=1, description="Passwords older than this are flagged by the access review."
    )
    max_admins: int = Field(
        3, ge=1, description="More admin accounts than this is a finding of the audit."
    )
    log_retention_days_required: int = Field(
        90, ge=1, description="Log retention the compliance audit requires (days)."
    )

    @model_validator(mode="after")
    def _proxies(self) -> SecuritySettings:
        import ipaddress

        for entry in self.trusted_proxies:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"trusted_proxies entry {entry[:64]!r} is not an IP address or network "
                    "such as 10.0.0.5 or 10.0.0.0/24"
                ) from None
        return self


class ExecutorSettings(Section):
    kind: Literal["local", "dask"] = Field(
        "local", description="Where jobs run: a local process pool, or a Dask cluster."
    )
    address: str | None = Field(
        None, description="Dask scheduler address (tcp://host:8786); empty starts a LocalCluster."
    )
    processes: int = Field(
        0, ge=0, le=256, description="Local pool size; 0 means one per CPU core."
    )


class JobSettings(Section):
    workers: int = Field(
        1, ge=0, le=64, description="Worker loops `sctk serve` runs in-process (0: none)."
    )
    concurrency: int = Field(
        0, ge=0, le=256, description="Jobs one worker runs at once; 0 means one per CPU core."
    )
    poll_seconds: float = Field(0.5, gt=0, le=60, description="Idle worker's queue poll period.")
    heartbeat_seconds: float = Field(
        5.0, gt=0, le=300, description="How often a running job's worker says it is alive."
    )
    stale_after_seconds: float = Field(
        30.0, gt=0, le=3600, description="A running job silent this long is re-queued."
    )
    max_attempts: int = Field(3, ge=1, le=100, description="Tries before a job is dead.")
    backoff_seconds: float = Field(
        2.0, ge=0, le=3600, description="First retry delay; doubles with each attempt."
    )
    max_backoff_seconds: float = Field(300.0, ge=0, description="Longest retry delay.")
    max_runtime_seconds: float = Field(
        6 * 3600.0,
        gt=0,
        le=30 * 86400,
        description="Longest a job may run; past it the job is stopped and marked failed.",
    )
    max_runtime_by_kind: dict[str, Annotated[float, Field(gt=0, le=30 * 86400)]] = Field(
        default_factory=dict,
        description='Per-kind maximum run times in seconds, e.g. {"uq.train" = 86400}.',
    )
    cancel_grace_seconds: float = Field(
        5.0,
        ge=0,
        le=600,
        description="How long a job told to stop (cancel, time limit) may take to stop on its "
        "own before its process is ended.",
    )

    def max_runtime(self, kind: str) -> float:
        """The maximum run time of a job of KIND, in seconds."""
        return self.max_runtime_by_kind.get(kind, self.max_runtime_seconds)


class BusSettings(Section):
    max_attempts: int = Field(
        5, ge=1, le=100, description="Deliveries of a message before it is a dead letter."
    )
    backoff_seconds: float = Field(
        0.2, ge=0, le=600, description="First redelivery delay; doubles with each attempt."
    )
    max_age_seconds: float = Field(
        600.0,
        ge=1,
        le=7 * 24 * 3600,
        description="A consumer drops an envelope created longer ago than this (a replay of a "
        "captured message); it drops an id it has taken before in any case.",
    )


class DataSettings(Section):
    max_upload_bytes: int = Field(
        512 * 1024 * 1024,
        ge=1024,
        description="Largest file an upload (POST /api/v1/datasets) takes.",
    )
    max_import_bytes: int | None = Field(
        None,
        ge=1024,
        description="Largest local file `sctk data import` takes; empty means any size the "
        "data directory's disk can hold (it is read in batches, stored in partitions).",
    )
    import_batch_rows: int = Field(
        65_536,
        ge=1,
        le=10_000_000,
        description="Rows a local import, or a pipeline step, reads at a time.",
    )
    partition_rows: int = Field(
        1024 * 1024,
        ge=1,
        le=100_000_000,
        description="Rows per partition (Parquet row group) of a dataset a local import or a "
        "pipeline stores; export and batch prediction read one partition at a time.",
    )
    max_violations_listed: int = Field(
        20, ge=1, le=10_000, description="Schema violations listed before the rest are counted."
    )
    # Bounds on what decoding user data may build, checked from a file's own metadata
    # (Parquet footer, .npy headers) before reading and counted while streaming (CSV, JSON
    # lines): a small file must not grow a process by gigabytes.
    max_rows: int = Field(10_000_000, ge=1, description="Most rows an imported file may hold.")
    max_columns: int = Field(
        2_000, ge=1, description="Most columns (arrays) an imported file may hold."
    )
    max_cells: int = Field(
        100_000_000,
        ge=1,
        description="Most values an imported file may hold (rows x columns, every "
        "number of an array column counted).",
    )
    max_decoded_bytes: int = Field(
        1024 * 1024 * 1024,
        ge=1024,
        description="Most memory a file's decoded values may take, and the largest value a "
        "pipeline expression may build.",
    )
    max_predict_cells: int = Field(
        1_000_000, ge=1, description="Most values (rows x features) one prediction request holds."
    )


# 'package.module:function', dotted identifiers only (sctk.uq.physics_registry)
PHYSICS_NAME_PATTERN = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$"


class UqSettings(Section):
    train_row_budget: int = Field(
        2_000_000,
        ge=100,
        le=1_000_000_000,
        description="Most rows `uq train` trains a tabular model on: a larger dataset is read "
        "a batch at a time and trained on a seeded sample of this many rows, stratified on "
        "the target's deciles (the lineage records the sample).",
    )
    physics_allowed: list[str] = Field(
        default_factory=list,
        max_length=1000,
        description="Physics functions ('package.module:function') a model config may name "
        "besides sctk's built-ins and the installed packages' 'sctk.physics' entry points; "
        "anything else a request or a stored model names is refused, never imported.",
    )
    coverage_window: int = Field(
        200,
        ge=10,
        le=100_000,
        description="Observations (true values sent with 'sctk uq observe' or POST "
        ".../observations) a model's rolling coverage is computed over.",
    )
    coverage_alert_level: float = Field(
        0.01,
        gt=0,
        lt=0.5,
        description="Significance of the one-sided binomial test behind the coverage alert: "
        "it fires when the misses in the window are this unlikely under the promised "
        "coverage.",
    )
    coverage_min_observations: int = Field(
        30, ge=1, le=100_000, description="Observations a model needs before the test is made."
    )
    adaptive_gamma: float = Field(
        0.005,
        gt=0,
        le=0.5,
        description="Step of adaptive conformal inference (alpha_t+1 = alpha_t + gamma "
        "(alpha - err_t)) for models put in adaptive mode without their own.",
    )

    @model_validator(mode="after")
    def _names(self) -> UqSettings:
        import re

        bad = [n for n in self.physics_allowed if not re.match(PHYSICS_NAME_PATTERN, n)]
        if bad:
            raise ValueError(
                f"physics_allowed takes 'package.module:function' names such as "
                f"'mypkg.models:drag', not {bad[0][:120]!r}"
            )
        return self


class CacheSettings(Section):
    url: SecretStr | None = Field(
        None,
        description="Redis URL of the prediction cache (e.g. redis://host:6379/0); empty means "
        "an in-process LRU.",
    )
    max_entries: int = Field(
        1024, ge=1, le=1_000_000, description="Predictions the in-process LRU cache keeps."
    )


class BackupSettings(Section):
    repository: str | None = Field(
        None,
        description="Backup repository: a local path or an fsspec URL (sftp://, s3://); "
        "empty means <home>/backups.",
    )
    passphrase_file: Path | None = Field(
        None,
        description="File whose first line is the repository passphrase (else the "
        "SCTK_BACKUP_PASSPHRASE environment variable).",
    )
    storage_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="fsspec options per protocol for a remote repository or copy, e.g. "
        "[backup.storage_options.s3] endpoint_url, region_name, key, secret, or "
        "[backup.storage_options.sftp] key_filename; by default S3 reads the AWS environment "
        "variables (AWS_ENDPOINT_URL too) and shared config files, SFTP the SSH agent or "
        "~/.ssh keys. Values are never shown by `config show`.",
    )
    remote_attempts: int = Field(
        5, ge=1, le=50, description="Tries of each remote storage operation on a dropped link."
    )
    remote_backoff_seconds: float = Field(
        0.5, ge=0, le=60, description="First pause before another try (doubled each time)."
    )
    keep_last: int | None = Field(7, ge=0, description="Prune keeps the newest N snapshots.")
    keep_daily: int | None = Field(7, ge=0, description="Prune keeps the last snapshot of N days.")
    keep_weekly: int | None = Field(4, ge=0, description="Prune keeps one snapshot per N weeks.")
    keep_monthly: int | None = Field(6, ge=0, description="Prune keeps one per N months.")
    keep_within_days: float | None = Field(
        None, ge=0, description="Prune keeps every snapshot younger than this many days."
    )
    pg_dump: str = Field("pg_dump", description="The pg_dump program backing up PostgreSQL.")
    safety_keep_last: int = Field(
        3,
        ge=0,
        description="Prune keeps the newest N safety snapshots (taken before a restore, "
        "upgrade or rollback); they never count toward or remove regular backups.",
    )
    safety_keep_within_days: float = Field(
        7.0, ge=0, description="Prune keeps every safety snapshot younger than this many days."
    )
    announce_success: bool = Field(
        False, description="Announce each successful backup on the alert channels (notifiers)."
    )
    max_age_warning_hours: float = Field(
        26.0, gt=0, description="The backup health check WARNs when the last backup is older."
    )
    max_age_critical_hours: float = Field(
        72.0, gt=0, description="The backup health check is CRITICAL when the last is older."
    )


class MonitorSettings(Section):
    interval_seconds: float = Field(
        1.0, ge=0.1, le=60, description="How often the collector samples the system metrics."
    )
    window_seconds: int = Field(
        3600, ge=60, le=24 * 3600, description="Raw samples kept in memory (seconds)."
    )
    retention_days: int = Field(
        90, ge=1, le=3650, description="1-minute aggregates kept in the database (days)."
    )
    disk_paths: list[str] = Field(
        default_factory=list,
        description="File systems whose use is collected; empty means the data directory's.",
    )
    memory_warning_percent: float = Field(
        80.0, gt=0, le=100, description="Memory use above this percentage is a WARNING."
    )
    memory_critical_percent: float = Field(
        95.0, gt=0, le=100, description="Memory use above this percentage is CRITICAL."
    )
    load_warning_per_core: float = Field(
        1.5,
        gt=0,
        le=1000,
        description="1-minute load average per core above this is a WARNING (never CRITICAL: "
        "an overloaded instance taken out of the load balancer would pile its load on the rest).",
    )
    endpoints: list[str] = Field(
        default_factory=list,
        description="Further host:port or URL endpoints whose reachability is checked.",
    )
    connect_timeout_seconds: float = Field(
        3.0, gt=0, le=60, description="TCP connect timeout of the connectivity check."
    )

    @model_validator(mode="after")
    def _ordered(self) -> MonitorSettings:
        if self.memory_critical_percent <= self.memory_warning_percent:
            raise ValueError("memory_critical_percent must be higher than memory_warning_percent")
        return self


class DrillSettings(Section):
    port: int = Field(
        0,
        ge=0,
        le=65535,
        description="TCP port (on 127.0.0.1) the disaster-recovery drill serves the restored "
        "copy on; 0 picks a free one. Set one where a firewall or SELinux allows only known "
        "ports.",
    )


class MaintenanceSettings(Section):
    schedule_daily: str = Field("0 2 * * *", description="Cron expression of the daily tasks.")
    schedule_weekly: str = Field("0 3 * * 0", description="Cron expression of the weekly tasks.")
    schedule_monthly: str = Field("0 4 1 * *", description="Cron expression of the monthly tasks.")
    schedule_quarterly: str = Field(
        "0 5 1 1,4,7,10 *", description="Cron expression of the quarterly tasks."
    )
    scheduler_in_serve: bool = Field(
        True, description="Run the scheduler inside `sctk serve` (else run `sctk scheduler`)."
    )
    poll_seconds: float = Field(
        30.0, gt=0, le=3600, description="How often the scheduler looks for due tasks."
    )
    lease_seconds: float = Field(
        90.0, ge=3, le=3600, description="A silent scheduler loses its lease after this long."
    )
    log_compress_mb: float = Field(
        100.0, gt=0, description="Log files larger than this (MB) are compressed."
    )
    log_retention_days: float = Field(
        90.0,
        gt=0,
        description="Compressed logs older than this (days) are deleted (the compliance audit "
        "requires security.log_retention_days_required).",
    )
    tmp_max_age_days: float = Field(
        1.0, gt=0, description="Files in tmp/ older than this (days) are deleted."
    )
    scratch_max_age_days: float = Field(
        7.0, gt=0, description="Files in tmp/scratch/ older than this (days) are deleted."
    )
    stale_temp_minutes: float = Field(
        60.0,
        ge=0,
        description="A writer's temporary file (.NAME.pPID-XXXX.tmp) anywhere in the data "
        "directory older than this (minutes), its writer gone, is a crash leftover: the tmp "
        "task deletes it and 'sctk doctor data' lists it.",
    )
    results_archive_days: float = Field(
        90.0, gt=0, description="Results older than this (days) move, compressed, to archive/."
    )
    key_max_age_days: float = Field(
        90.0, gt=0, description="The weekly task rotates the keyring when its newest key is older."
    )
    long_query_minutes: float = Field(
        5.0, gt=0, description="PostgreSQL queries running longer than this are reported."
    )
    benchmark_selftest: bool = Field(
        True,
        description="The weekly quick benchmark also runs `sctk selftest --quick` (a child "
        "process on a scratch home) and records its step times; a failing step fails the task.",
    )

    @model_validator(mode="after")
    def _crons(self) -> MaintenanceSettings:
        from croniter import croniter

        for group in ("daily", "weekly", "monthly", "quarterly"):
            expression = getattr(self, f"schedule_{group}")
            if not croniter.is_valid(expression):
                raise ValueError(
                    f"schedule_{group} {expression!r} is not a valid cron expression; "
                    "use five fields such as '0 2 * * *'"
                )
        return self


class Settings(BaseSettings):
    """Every setting sctk reads. Sections map to TOML tables and to SCTK_SECTION__KEY."""

    model_config = SettingsConfigDict(
        env_prefix="SCTK_", env_nested_delimiter="__", extra="forbid", validate_assignment=True
    )

    home: Path = Field(default_factory=default_home, description="The data directory.")
    database_url: SecretStr | None = Field(
        None,
        description="SQLAlchemy URL; empty means SQLite at <home>/sctk.db. "
        "Example: postgresql://user:pass@host:5432/sctk",
    )
    server: ServerSettings = Field(default_factory=ServerSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    bus: BusSettings = Field(default_factory=BusSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    uq: UqSettings = Field(default_factory=UqSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    alerts: AlertSettings = Field(default_factory=lambda: _domain_section("alerts")())
    anomaly: AnomalySettings = Field(default_factory=lambda: _domain_section("anomaly")())
    maintenance: MaintenanceSettings = Field(default_factory=MaintenanceSettings)
    drill: DrillSettings = Field(default_factory=DrillSettings)

    def __init__(self, **values: Any) -> None:
        _complete()  # the settings sources read the sections' models before validating
        super().__init__(**values)

    @classmethod
    def model_rebuild(cls, **kwargs: Any) -> bool | None:
        # pydantic rebuilds a model left incomplete on its first validation
        # (model_validate too): hand it the domains' section models by name
        names = {model: _domain_section(section) for section, model in DOMAIN_SECTIONS.items()}
        kwargs["_types_namespace"] = {**names, **(kwargs.get("_types_namespace") or {})}
        return super().model_rebuild(**kwargs)

    @property
    def config_file(self) -> Path:
        return self.home / CONFIG_FILE_NAME

    @property
    def db_url(self) -> str:
        """The database URL actually used (the SQLite default when none is configured)."""
        if self.database_url is not None and self.database_url.get_secret_value():
            return self.database_url.get_secret_value()
        return f"sqlite:///{self.home / 'sctk.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")


def _complete() -> None:
    if not Settings.__pydantic_complete__:
        Settings.model_rebuild()


def settings_fields() -> dict[str, FieldInfo]:
    """Settings' fields, every section's model resolved (what the reference, the config
    template and `config set` walk)."""
    _complete()
    return Settings.model_fields


@dataclass
class LoadedSettings:
    """Settings plus where each dotted key came from (default, file path, env var, flag)."""

    settings: Settings
    origins: dict[str, str] = field(default_factory=dict)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# Settings renamed between releases, old dotted key -> new one. A file written for an older
# release still loads (the value is read under its new name) and `sctk upgrade` rewrites the
# file. A release that renames a setting adds its entry here; none has yet.
RENAMED_SETTINGS: dict[str, str] = {}


def apply_renames(
    data: dict[str, Any], renames: dict[str, str] | None = None
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """DATA (a parsed sctk.toml) with renamed settings moved to their new names, and the
    renames made. A value already under the new name wins over the old one."""
    renames = RENAMED_SETTINGS if renames is None else renames
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    done = []
    for old, new in renames.items():
        *old_path, old_key = old.split(".")
        *new_path, new_key = new.split(".")
        source = out
        for part in old_path:
            source = source.get(part) if isinstance(source, dict) else None
        if not isinstance(source, dict) or old_key not in source:
            continue
        value = source.pop(old_key)
        target = out
        for part in new_path:
            target = target.setdefault(part, {})
        target.setdefault(new_key, value)
        done.append((old, new))
    return out, done


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a syntax error becomes one sentence naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"Cannot read {path}: {exc.strerror}.") from None
    try:
        data = tomltext.loads(text, str(path), ConfigError)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid TOML: {exc}; fix that line or move the file away."
        ) from None
    if "home" in data:
        raise ConfigError(
            f"{path}: 'home' cannot be set inside the data directory it names; "
            "use --home or SCTK_HOME instead."
        )
    return data


def _env_values() -> dict[str, Any]:
    _complete()  # the source reads each field's model to split SCTK_SECTION__KEY
    source = EnvSettingsSource(Settings)
    return source()


def env_name(dotted: str) -> str:
    return "SCTK_" + dotted.replace(".", "__").upper()


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    for part in loc:
        info = model.model_fields.get(str(part))
        if info is None or not (
            isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
        ):
            return []
        model = info.annotation
    return list(model.model_fields)


def describe_errors(exc: ValidationError, origins: dict[str, str]) -> list[str]:
    """One sentence per invalid field, naming the field and where its value came from."""
    sentences = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if p != "__root__")
        dotted = ".".join(str(p) for p in loc)
        origin = origins.get(dotted)
        if origin is None:
            # a section-level error (e.g. health thresholds out of order) has no leaf origin:
            # name every place a value of that section was given (a file and the environment
            # may each have set one of the two values that disagree)
            given = [o for k, o in origins.items() if not dotted or k.startswith(dotted + ".")]
            origin = " and ".join(dict.fromkeys(given))
        where = f" (from {origin})" if origin else ""
        if err["type"] == "extra_forbidden":
            known = _known_keys(Settings, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(known)}"
            sentences.append(f"unknown setting '{dotted}'{where}{hint}")
        else:
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            got = err.get("input")
            shown = "" if isinstance(got, dict) or got is None else f", got {got!r}"
            name = f"'{dotted}'" if dotted else "settings"
            sentences.append(f"{name}{where}: {msg}{shown}")
    return sentences


def resolve_home(home: Path | str | None = None) -> Path:
    if home is not None:
        return Path(home).expanduser().absolute()
    env = os.environ.get("SCTK_HOME")
    if env:
        return Path(env).expanduser().absolute()
    return default_home()


def load(home: Path | str | None = None, overrides: dict[str, Any] | None = None) -> LoadedSettings:
    """Build the effective settings for a data directory.

    Raises ConfigError naming every bad field and where its value came from.
    """
    home_path = resolve_home(home)
    config_path = home_path / CONFIG_FILE_NAME
    layers: list[tuple[str, dict[str, Any]]] = [
        (str(config_path), apply_renames(read_toml(config_path))[0]),
        ("environment", _env_values()),
        ("command line", {k: v for k, v in (overrides or {}).items() if v is not None}),
    ]
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for name, data in layers:
        data = {k: v for k, v in data.items() if k != "home"}
        merged = _merge(merged, data)
        for dotted in _flatten(data):
            origins[dotted] = env_name(dotted) if name == "environment" else name
    merged["home"] = home_path
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(describe_errors(exc, origins))
        end = "" if problems.endswith(("?", ".")) else "."
        raise ConfigError(f"Invalid settings: {problems}{end}") from None
    for dotted in _flatten(settings.model_dump(exclude={"home"})):
        origins.setdefault(dotted, "default")
    if home is not None:
        origins["home"] = "command line"
    elif os.environ.get("SCTK_HOME"):
        origins["home"] = "SCTK_HOME"
    else:
        origins["home"] = "default"
    return LoadedSettings(settings, origins)


def check_file(path: Path) -> list[str]:
    """Validate one sctk.toml on its own (defaults + the file); return every problem found."""
    try:
        data = read_toml(path)
    except ConfigError as exc:
        return [exc.message]
    if not path.exists():
        return [f"{path} does not exist; create it with 'sctk init' or name another file."]
    try:
        Settings.model_validate({**data, "home": path.parent})
    except ValidationError as exc:
        return describe_errors(exc, {})
    return []


def redacted(loaded: LoadedSettings) -> list[tuple[str, str, str]]:
    """(key, shown value, origin) for every setting; secrets and URL passwords hidden."""
    from sqlalchemy.engine import make_url

    settings = loaded.settings
    rows = []
    for dotted, value in _flatten(settings.model_dump(mode="python")).items():
        if dotted == "database_url":
            value = settings.db_url
            try:
                value = make_url(value).render_as_string(hide_password=True)
            except Exception:  # an unparsable URL is still a secret
                value = "**********"
        elif isinstance(value, SecretStr) or dotted.startswith("backup.storage_options."):
            # storage options carry access keys and passwords: never shown
            shown = value.get_secret_value() if isinstance(value, SecretStr) else value
            value = "**********" if shown not in ("", None) else ""
        rows.append((dotted, str(value), loaded.origins.get(dotted, "default")))
    return rows
