"""Application metrics in a Prometheus registry of the app's own (never the global default, so
that several apps in one process, as in the tests, never collide).

Counted as they happen (by sctk.api.middleware.AccessMiddleware): HTTP requests by method,
route template and status, with a latency histogram. Read at scrape time: the system metrics
of the running collector, jobs by state and the queue depth, the age of the newest backup
(when the backup catalog table exists), the last result of each maintenance task, and the hit
rate of the UQ prediction cache.

Each model's interval coverage on the labelled data of its newest evaluation
(`sctk uq evaluate`) is exported beside the coverage it promises, so an alert can watch a
model whose intervals stopped holding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector as PromCollector
from sqlalchemy import Engine, func, inspect, select, text
from starlette.types import Scope

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "<unmatched>"  # one label for every path no route matched: bounded cardinality
MAINTENANCE_STATUS = {"ok": 0, "warn": 1, "fail": 2}

# system metric name -> (Prometheus name, help)
SYSTEM = {
    "cpu_percent": ("sctk_host_cpu_percent", "CPU in use on the host, percent."),
    "memory_percent": ("sctk_host_memory_percent", "Memory in use on the host, percent."),
    "disk_percent": ("sctk_host_disk_percent", "Space used on a file system, percent."),
    "net_sent_bytes_per_s": (
        "sctk_host_network_sent_bytes_per_second",
        "Bytes sent by the host per second.",
    ),
    "net_recv_bytes_per_s": (
        "sctk_host_network_received_bytes_per_second",
        "Bytes received by the host per second.",
    ),
    "load1": ("sctk_host_load1", "1-minute load average of the host."),
    "sctk_cpu_percent": (
        "sctk_process_cpu_percent",
        "CPU used by this sctk process and its children, percent of one core.",
    ),
    "sctk_rss_bytes": (
        "sctk_process_resident_memory_bytes",
        "Resident memory of this sctk process and its children.",
    ),
}


def _aware(value: object) -> datetime | None:
    """A timestamp read with raw SQL: SQLite gives text, PostgreSQL an aware datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class ScrapeCollector(PromCollector):
    """Families computed when /metrics is read (from the database and the collector)."""

    def __init__(
        self,
        engine: Engine | None,
        collector: Callable[[], object | None],
        home: Path | None = None,
        bus: Callable[[], Any] = lambda: None,
        uq: Any = None,
    ):
        self.engine = engine
        self.collector = collector
        self.home = home
        self.bus = bus
        self.uq = uq  # the [uq] settings: the observed coverage's window and test
        self._has_backups = False

    def describe(self) -> list[Metric]:
        return []  # dynamic: nothing to check for clashes at registration

    def collect(self) -> Iterator[Metric]:
        yield from self._system()
        if self.engine is not None:
            up = GaugeMetricFamily(
                "sctk_database_up", "Whether the last scrape reached the database."
            )
            try:
                families = list(self._database())
                up.add_metric([], 1.0)
            except Exception as exc:
                log.warning("metrics scrape could not read the database: %s", exc)
                families = []
                up.add_metric([], 0.0)
            yield up
            yield from families
            if self.uq is not None and up.samples[0].value:
                yield from self._observed_coverage()
        yield from self._uq_cache()
        yield from self._bus()
        if self.home is not None:
            yield from self._model_coverage()

    def _bus(self) -> Iterator[Metric]:
        bus = self.bus()
        if bus is None:
            return
        messages = CounterMetricFamily(
            "sctk_bus_messages",
            "Bus messages of this process by outcome (replayed and expired ones were dropped).",
            labels=["outcome"],
        )
        for outcome, n in bus.stats.items():
            messages.add_metric([outcome], float(n))
        yield messages

    def _observed_coverage(self) -> Iterator[Metric]:
        """Each model's rolling coverage over its newest observations in production (`sctk uq
        observe`, POST .../observations), the coverage promised, the test's p-value, and
        alpha_t in adaptive mode."""
        from sqlalchemy.orm import Session

        from sctk.uq import observations

        assert self.engine is not None
        try:
            with Session(self.engine) as session:
                windows = observations.all_windows(session, self.uq)
                adaptive = {r.id: observations.adaptive_state(session, r) for r, _ in windows}
        except Exception as exc:  # an older schema without the table: nothing to show
            log.warning("metrics scrape could not read the observations: %s", exc)
            return
        if not windows:
            return
        names = ("model", "version")
        fams = {
            "coverage": GaugeMetricFamily(
                "sctk_model_observed_coverage",
                "Coverage of a model's intervals over its newest observations in production.",
                labels=names,
            ),
            "target": GaugeMetricFamily(
                "sctk_model_observed_target_coverage",
                "The coverage those intervals promise (1 - alpha).",
                labels=names,
            ),
            "n": GaugeMetricFamily(
                "sctk_model_observations_window",
                "Observations the rolling coverage is computed over.",
                labels=names,
            ),
            "p_value": GaugeMetricFamily(
                "sctk_model_coverage_p_value",
                "One-sided binomial p-value of the misses under the promised coverage.",
                labels=names,
            ),
        }
        alpha_t = GaugeMetricFamily(
            "sctk_model_adaptive_alpha",
            "alpha_t of a model in adaptive conformal mode.",
            labels=names,
        )
        for row, window in windows:
            labels = [row.name, str(row.version)]
            for key, fam in fams.items():
                fam.add_metric(labels, float(window[key]))
            state = adaptive.get(row.id)
            if state is not None and state["enabled"]:
                alpha_t.add_metric(labels, float(state["alpha_t"]))
        yield from fams.values()
        yield alpha_t

    def _model_coverage(self) -> Iterator[Metric]:
        """Each model's interval coverage on the labelled data of its newest evaluation
        (`sctk uq evaluate`) of the last 30 days, beside the coverage it promises."""
        from sctk.uq.evaluation import latest_reports

        reports = latest_reports(self.home)
        if not reports:
            return
        cov = GaugeMetricFamily(
            "sctk_model_interval_coverage",
            "Empirical coverage of a model's intervals on recently labelled data.",
            labels=["model", "version"],
        )
        nominal = GaugeMetricFamily(
            "sctk_model_interval_nominal_coverage",
            "The coverage the model's intervals promise (1 - alpha) in that evaluation.",
            labels=["model", "version"],
        )
        for doc in reports.values():
            labels = [str(doc["model"]["name"]), str(doc["model"]["version"])]
            if "coverage" in doc:
                cov.add_metric(labels, float(doc["coverage"]))
            if "alpha" in doc:
                nominal.add_metric(labels, 1.0 - float(doc["alpha"]))
        yield cov
        yield nominal

    def _system(self) -> Iterator[Metric]:
        running = self.collector()
        if running is None:
            return
        latest = running.window.latest()  # type: ignore[attr-defined]
        families: dict[str, GaugeMetricFamily] = {}
        for name, (_, value) in latest.items():
            base, _, path = name.partition(":")
            if base not in SYSTEM:
                continue
            prom, doc = SYSTEM[base]
            if base == "disk_percent":
                fam = families.get(prom) or GaugeMetricFamily(prom, doc, labels=["path"])
                fam.add_metric([path or "default"], value)
            else:
                fam = families.get(prom) or GaugeMetricFamily(prom, doc)
                fam.add_metric([], value)
            families[prom] = fam
        yield from families.values()

    def _database(self) -> Iterator[Metric]:
        from sctk.jobs.queue import STATUSES
        from sctk.storage.models import Job, MaintenanceRun

        now = datetime.now(UTC)
        assert self.engine is not None
        with self.engine.connect() as conn:
            counts = dict(conn.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            jobs = GaugeMetricFamily("sctk_jobs", "Jobs by state.", labels=["state"])
            for state in STATUSES:
                jobs.add_metric([state], float(counts.get(state, 0)))
            yield jobs
            depth = conn.scalar(
                select(func.count()).where(Job.status == "queued", Job.run_after <= now)
            )
            yield GaugeMetricFamily(
                "sctk_jobs_queue_depth",
                "Queued jobs due to run now (not waiting for a retry delay).",
                value=float(depth or 0),
            )

            # the backup catalog is another domain's table: read only where it exists
            if not self._has_backups:
                self._has_backups = inspect(conn).has_table("backup_snapshots")
            if self._has_backups:
                newest = _aware(conn.scalar(text("SELECT max(time) FROM backup_snapshots")))
                if newest is not None:
                    yield GaugeMetricFamily(
                        "sctk_backup_last_age_seconds",
                        "Seconds since the newest backup snapshot.",
                        value=(now - newest).total_seconds(),
                    )

            last = (
                select(MaintenanceRun.task, func.max(MaintenanceRun.id).label("id"))
                .where(MaintenanceRun.status != "running")
                .group_by(MaintenanceRun.task)
                .subquery()
            )
            rows = conn.execute(
                select(MaintenanceRun.task, MaintenanceRun.status, MaintenanceRun.finished_at).join(
                    last, MaintenanceRun.id == last.c.id
                )
            ).all()
            status = GaugeMetricFamily(
                "sctk_maintenance_last_status",
                "Last result of each maintenance task: 0 ok, 1 warn, 2 fail.",
                labels=["task"],
            )
            finished = GaugeMetricFamily(
                "sctk_maintenance_last_finished_timestamp_seconds",
                "When each maintenance task last finished (Unix time).",
                labels=["task"],
            )
            for task, st, at in rows:
                status.add_metric([task], float(MAINTENANCE_STATUS.get(st, 2)))
                at = _aware(at)
                if at is not None:
                    finished.add_metric([task], at.timestamp())
            runs = CounterMetricFamily(
                "sctk_maintenance_runs",
                "Maintenance task runs recorded, by task and result.",
                labels=["task", "status"],
            )
            for task, st, n in conn.execute(
                select(MaintenanceRun.task, MaintenanceRun.status, func.count()).group_by(
                    MaintenanceRun.task, MaintenanceRun.status
                )
            ).all():
                runs.add_metric([task, st], float(n))
            yield status
            yield finished
            yield runs

    def _uq_cache(self) -> Iterator[Metric]:
        from sctk.uq import cache

        stats = cache.stats()
        hits, misses = stats["hits"], stats["misses"]
        yield CounterMetricFamily(
            "sctk_uq_cache_hits", "Prediction cache hits in this process.", value=float(hits)
        )
        yield CounterMetricFamily(
            "sctk_uq_cache_misses", "Prediction cache misses in this process.", value=float(misses)
        )
        if hits + misses:
            yield GaugeMetricFamily(
                "sctk_uq_cache_hit_ratio",
                "Share of prediction cache lookups answered from the cache.",
                value=hits / (hits + misses),
            )


class AppMetrics:
    """The app's registry and the instruments the middleware feeds."""

    def __init__(
        self,
        engine: Engine | None = None,
        collector: Callable[[], object | None] = lambda: None,
        home: Path | None = None,
        bus: Callable[[], Any] = lambda: None,
        uq: Any = None,
    ):
        from prometheus_client import ProcessCollector

        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "sctk_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sctk_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        ProcessCollector(registry=self.registry)
        self.registry.register(ScrapeCollector(engine, collector, home, bus, uq))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        # the labelled children, looked up once per (method, route, status): labels() costs
        # more than the increment itself, on every request
        if method not in KNOWN_METHODS:  # a client may send any token as the method
            method = "OTHER"
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def route_template(scope: Scope) -> str:
    """The matched route's path template (/api/v1/jobs/{job_id}), never the raw path: raw
    paths would make one time series per id."""
    # FastAPI matches routers included with a prefix lazily: the route itself knows only its
    # own part of the path; the effective route context knows the whole template
    context = (scope.get("fastapi") or {}).get("effective_route_context")
    for source in (context, scope.get("route")):
        path = getattr(source, "path_format", None) or getattr(source, "path", None)
        if isinstance(path, str) and path:
            return path
    return UNMATCHED
