"""`bench_backup.py --remote s3`: the first backup and a full restore over the S3 API, against
restic on the same server.

Run by hand (not a test), through bench_backup.py, which makes the data set:

    python benchmarks/bench_backup.py --remote s3 --tools sctk,restic --scale 0.25

One moto standalone server (`python -m moto.server`) on a loopback port holds both
repositories (it keeps objects in memory: --scale 0.25 is about 256 MiB per repository).
sctk writes `s3://bench-sctk/repo` (s3fs, credentials and endpoint from the AWS_* variables,
AWS_ENDPOINT_URL included), restic `s3:http://127.0.0.1:PORT/bench-restic`. In each round,
for each tool in turn on the same warm data: init, the first backup (MB/s of the data set),
a full restore of it into an empty directory (MB/s; checked against the data set's SHA-256
afterwards, outside the timing). Both tools run as child processes under GNU time, as in
bench_backup.py. Ratios sctk / restic are printed and written to benchmarks/RESULTS.md,
section "Backup to S3 against restic".
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench_backup import MiB, Restic, Sctk, _phases, digest, tree_bytes, warm
from results import RESULTS, write_section

SECTION = "## Backup to S3 against restic"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoS3:
    """moto's standalone S3 server on a loopback port (no authentication: any key works)."""

    def __init__(self, work: Path):
        self.port = free_port()
        self.log = open(work / "moto.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                if self.proc.poll() is not None:
                    raise SystemExit(f"moto server exited; see {work / 'moto.log'}") from None
                time.sleep(0.1)
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


class SctkS3(Sctk):
    def __init__(self, work: Path, data: Path, server: MotoS3, n: int) -> None:
        super().__init__(work, data)
        self.repo = f"s3://bench-sctk-{n}/repo"


class ResticS3(Restic):
    def __init__(self, work: Path, data: Path, server: MotoS3, n: int) -> None:
        super().__init__(work, data)
        self.repo = f"s3:{server.endpoint}/bench-restic-{n}"


def _said(r: dict) -> str:
    return f"{r['seconds']:.1f} s, cpu {r['cpu']:.1f} s{_phases(r)}"


def one_round(work: Path, dataset: Path, tools: list[str], server: MotoS3, n: int, log) -> dict:
    data = work / "data"
    subprocess.run(["cp", "-a", str(dataset), str(data)], check=True)
    size = tree_bytes(data)
    classes = {"sctk": SctkS3, "restic": ResticS3}
    objs = [classes[name](work, data, server, n) for name in tools]
    expected = digest(data)
    out: dict = {"bytes": size}
    for t in objs:
        t.init()
    warm(data)
    for t in objs:
        log(f"{t.name}: first backup to S3")
        r = out[f"{t.name}.backup"] = t.backup("first")
        log(f"  {size / MiB / r['seconds']:.1f} MB/s, {_said(r)}")
    for t in objs:
        target = work / f"restore-{t.name}"
        target.mkdir()
        log(f"{t.name}: full restore from S3")
        r = out[f"{t.name}.restore"] = t.restore(target)
        log(f"  {size / MiB / r['seconds']:.1f} MB/s, {_said(r)}")
        got = digest(t.restored_root(target))
        if got != expected:
            wrong = sorted(k for k in expected if got.get(k) != expected[k])[:5]
            raise SystemExit(f"{t.name} restored different files: {wrong}")
    for r in out.values():
        if isinstance(r, dict):
            r.pop("stdout", None)
            phases = r.pop("engine", {}).get("phases", {})
            r["open"] = phases.get("open", 0.0)  # sctk: start-up of the engine's process
    return out


def remote_main(args, dataset: Path, tools: list[str], versions: dict, log) -> int:
    """Measure --rounds rounds against one moto server; print and write the table."""
    tools = [t for t in tools if t in ("sctk", "restic")]
    if not tools:
        raise SystemExit("--remote s3 measures sctk and restic: pass --tools sctk,restic")
    with tempfile.TemporaryDirectory(prefix="sctk-bench-remote-", dir=args.work) as tmp:
        server = MotoS3(Path(tmp))
        # the conventional sources both tools read: AWS_* (sctk's s3fs: AWS_ENDPOINT_URL too)
        os.environ.update(
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench-secret",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ENDPOINT_URL=server.endpoint,
        )
        rounds = []
        load0 = os.getloadavg()[0]
        try:
            for n in range(args.rounds):
                work = Path(tmp) / f"round-{n}"
                work.mkdir()
                log(f"round {n + 1}/{args.rounds} against moto at {server.endpoint}")
                rounds.append(one_round(work, dataset, tools, server, n, log))
        finally:
            server.stop()
    args.loads = (load0, os.getloadavg()[0])
    text = report(rounds, tools, versions, args)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
        print(f"wrote {RESULTS}")
    return 0


def report(rounds: list[dict], tools: list[str], versions: dict, args) -> str:
    size = rounds[0]["bytes"]

    def med(key: str, field: str) -> float:
        return statistics.median(r[key][field] for r in rounds)

    lines = [
        SECTION,
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores, "
        f"{len(rounds)} round(s) (median), data set {size / MiB:.0f} MiB "
        f"(backup_dataset.py, scale {args.scale:g}, seed {args.seed}), both repositories on one "
        f"moto standalone S3 server on a loopback port; {', '.join(versions.values())}. "
        "Command: `python benchmarks/bench_backup.py --remote s3 --tools sctk,restic "
        f"--scale {args.scale:g}`. MB/s is the data set's size over the wall time of the step; "
        "peak RSS and CPU seconds of the tool's process (the server's are not counted). "
        f"Load average {args.loads[0]:.1f} before and {args.loads[1]:.1f} after (other "
        "processes shared the machine).",
        "",
        "| tool | first backup s | MB/s | peak RSS MiB | CPU s | full restore s | MB/s "
        "| peak RSS MiB | CPU s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in tools:
        b, r = f"{t}.backup", f"{t}.restore"
        lines.append(
            f"| {t} | {med(b, 'seconds'):.1f} | {size / MiB / med(b, 'seconds'):.1f} "
            f"| {med(b, 'rss') / MiB:.0f} | {med(b, 'cpu'):.1f} | {med(r, 'seconds'):.1f} "
            f"| {size / MiB / med(r, 'seconds'):.1f} | {med(r, 'rss') / MiB:.0f} "
            f"| {med(r, 'cpu'):.1f} |"
        )
    if "sctk" in tools and "restic" in tools:
        b = med("restic.backup", "seconds") / med("sctk.backup", "seconds")
        r = med("restic.restore", "seconds") / med("sctk.restore", "seconds")
        lines += [
            "",
            f"Throughput sctk / restic: first backup **{b:.2f}x**, full restore **{r:.2f}x** "
            "(above 1: sctk is faster).",
        ]
    if "sctk" in tools:
        lines += [
            "",
            f"Of sctk's restore, {med('sctk.restore', 'open'):.1f} s is opening the repository "
            "(the argon2id key derivation, and importing s3fs/aiobotocore: about a second on a "
            "busy machine) before the first byte is read; a Go binary starts at once.",
        ]
    return "\n".join(lines) + "\n"
