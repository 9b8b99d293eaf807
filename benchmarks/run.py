"""Benchmark the overlay job on the local lab at several cluster sizes; report figures, assert nothing.

For each size N (default 3, 10, 20) the lab is brought up fresh with N hosts (lab1 runs the store, the
others are docker hosts), then the CLI runs as a subprocess, each command on its own:

    first apply   converges from scratch (store image upload, store, daemons, networks, ping matrix)
    no-op apply   the same playbook again: nothing to change
    plan          dry run on the converged cluster
    verify        the ping matrix alone

Per command: wall time, peak RSS of the tool (the CLI process and its children, from wait4's rusage),
SSH connects and round trips from the JSON report. The first apply's critical path is taken from the
tool's own per-task durations: store start and leader election, one Docker restart per docker host in
rolling mode (their sum), network creation, the ping matrix.

Writes benchmarks/results/results.json and benchmarks/results/time_vs_hosts.png, prints a table.

    .venv/bin/python benchmarks/run.py [--sizes 3,10,20] [--subnet 198.18.10.0/24] [--keep]

Needs root (the lab runs its own dockerd) and the `bench` extra for the plot (matplotlib).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from provisioner.lab import lab_down, lab_up  # noqa: E402

PLAYBOOK = ROOT / "playbooks" / "overlay.yml"
RESULTS = ROOT / "benchmarks" / "results"
STATE = Path(os.environ.get("PROVISIONER_BENCH_LAB_DIR", "/var/lib/provisioner/lab-bench"))
SUBNET = os.environ.get("PROVISIONER_BENCH_LAB_SUBNET", "198.18.10.0/24")
COMMANDS = ("first apply", "no-op apply", "plan", "verify")
TARGETS = {  # issue 7, on this machine's lab (2 cores)
    "no-op apply": {3: 1.0, 20: 2.0},
    "plan": {3: 1.0, 20: 2.0},
}
PEAK_RSS_TARGET_MB = 150.0


@dataclass
class Measure:
    command: str
    hosts: int
    rc: int
    wall_s: float
    peak_rss_mb: float
    changed: int | None = None
    connects: int | None = None  # summed over hosts
    round_trips: dict[str, int] = field(default_factory=dict)  # per host
    tool_duration_s: float | None = None  # the executor's own run duration (excludes start-up)


@dataclass
class CriticalPath:
    store_s: float  # store container start + leader election
    restarts_s: float  # Docker restarts, one host after the other
    networks_s: float
    ping_matrix_s: float
    other_s: float  # everything else the first apply did (image uploads, swarm checks...)

    @property
    def total_s(self) -> float:
        return self.store_s + self.restarts_s + self.networks_s + self.ping_matrix_s


def run_cli(hosts: int, command: str, *args: str) -> tuple[Measure, dict[str, Any] | None]:
    """Run `python -m provisioner ARGS` and measure it (its own rusage via wait4, not the sum of earlier runs)."""
    argv = [sys.executable, "-m", "provisioner", *args, "--output", "json"]
    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out_f, stderr=err_f)  # noqa: S603 (our own CLI)
        # reaped here, not by Popen: wait4 gives this process's own rusage (peak RSS of it and its children)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
        rc = proc.returncode = os.waitstatus_to_exitcode(status)
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    report: dict[str, Any] | None
    try:
        report = json.loads(out)
    except json.JSONDecodeError:
        report = None
        print(f"  {command}: no JSON report (exit {rc}):\n{err.decode(errors='replace')[-2000:]}")
    m = Measure(command, hosts, rc, round(wall, 3), round(usage.ru_maxrss / 1024, 1))
    if report is not None:
        conns = report.get("connections") or {}
        m.changed = report.get("changed")
        m.connects = sum(int(c.get("connects", 0)) for c in conns.values())
        m.round_trips = {h: int(c.get("round_trips", 0)) for h, c in conns.items()}
        if report.get("duration") is not None:
            m.tool_duration_s = round(float(report["duration"]), 3)
        if rc != 0:
            # a red cell must say why: the run's own error and each failed task's first lines
            for line in failures(report):
                print(f"  {command}: {line}")
    return m, report


def failures(report: dict[str, Any]) -> list[str]:
    out = [report["error"]] if report.get("error") else []
    for host, h in (report.get("hosts") or {}).items():
        if h.get("unreachable"):
            out.append(f"{host} unreachable: {h.get('unreachable_reason', '')}")
        for t in h.get("tasks") or []:
            if t.get("status") == "failed":
                out.append(f"{host} [{t.get('task')}]: " + " | ".join(str(t.get("message", "")).splitlines()[:6]))
    return out


def critical_path(report: dict[str, Any]) -> CriticalPath:
    """From the first apply's per-task durations (module names of playbooks/overlay.yml)."""
    store = restarts = networks = ping = other = 0.0
    for host in report["hosts"].values():
        for t in host["tasks"]:
            d, module, status = float(t.get("duration") or 0.0), t.get("module"), t.get("status")
            if module == "kv_store" and status == "changed":
                store = max(store, d)  # several store hosts start in parallel
            elif module == "docker_daemon" and status == "changed":
                restarts += d  # rolling: one host at a time
            elif module == "docker_network" and status == "changed":
                networks += d
            elif module == "overlay_verify":
                ping = max(ping, d)
            else:
                other = max(other, d)
    return CriticalPath(round(store, 2), round(restarts, 2), round(networks, 2), round(ping, 2), round(other, 2))


def bench_size(n: int, subnet: str, state_dir: Path) -> dict[str, Any]:
    print(f"== {n} hosts: lab up (fresh)", flush=True)
    lab_down(state_dir=state_dir, keep_image=True)
    t0 = time.monotonic()
    info = lab_up(hosts=n, suite="bullseye", subnet=subnet, state_dir=state_dir)
    boot = time.monotonic() - t0
    inv = str(info.inventory_path)
    runs = [
        ("first apply", ("apply", "-i", inv, str(PLAYBOOK))),
        ("no-op apply", ("apply", "-i", inv, str(PLAYBOOK))),
        ("plan", ("plan", "-i", inv, str(PLAYBOOK))),
        ("verify", ("verify", "-i", inv)),
    ]
    measures: list[Measure] = []
    path: CriticalPath | None = None
    for name, args in runs:
        m, report = run_cli(n, name, *args)
        measures.append(m)
        print(f"   {name:12} {m.wall_s:7.2f} s  {m.peak_rss_mb:6.1f} MB  rc={m.rc}  changed={m.changed}", flush=True)
        if name == "first apply" and report is not None:
            path = critical_path(report)
    return {
        "hosts": n,
        "lab_boot_s": round(boot, 1),
        "measures": [asdict(m) for m in measures],
        "critical_path": None if path is None else {**asdict(path), "total_s": round(path.total_s, 2)},
    }


def machine() -> dict[str, Any]:
    mem_kb = next(
        (
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": platform.freedesktop_os_release().get("PRETTY_NAME", ""),
        "python": platform.python_version(),
        "load_avg_at_start": list(os.getloadavg()),
    }


def table(sizes: list[dict[str, Any]]) -> str:
    head = f"{'hosts':>5}  {'command':12} {'wall s':>7} {'peak MB':>8} {'connects':>8} {'round trips (max/host)':>22}"
    lines = [head, "-" * len(head)]
    for s in sizes:
        for m in s["measures"]:
            rts = m["round_trips"]
            rt = f"{sum(rts.values())} ({max(rts.values())})" if rts else "-"
            lines.append(
                f"{s['hosts']:>5}  {m['command']:12} {m['wall_s']:>7.2f} {m['peak_rss_mb']:>8.1f} "
                f"{m['connects'] if m['connects'] is not None else '-':>8} {rt:>22}"
            )
        cp = s["critical_path"]
        if cp:
            first = next(m for m in s["measures"] if m["command"] == "first apply")
            ratio = first["wall_s"] / cp["total_s"] if cp["total_s"] else float("nan")
            lines.append(
                f"{'':>5}  critical path {cp['total_s']:.1f} s (store {cp['store_s']:.1f}, restarts "
                f"{cp['restarts_s']:.1f}, networks {cp['networks_s']:.1f}, ping matrix {cp['ping_matrix_s']:.1f}); "
                f"first apply = {ratio:.2f}x"
            )
    return "\n".join(lines)


def targets(sizes: list[dict[str, Any]]) -> list[str]:
    out = []
    by_n = {s["hosts"]: {m["command"]: m for m in s["measures"]} for s in sizes}
    for cmd, per_n in TARGETS.items():
        for n, limit in per_n.items():
            if n in by_n and cmd in by_n[n]:
                wall = by_n[n][cmd]["wall_s"]
                verdict = "met" if wall <= limit else "NOT met"
                out.append(f"{cmd} on {n} hosts: {wall:.2f} s (target {limit:.1f} s): {verdict}")
    for s in sizes:
        cp = s["critical_path"]
        first = next((m for m in s["measures"] if m["command"] == "first apply"), None)
        if cp and first and cp["total_s"]:
            r = first["wall_s"] / cp["total_s"]
            verdict = "met" if r <= 1.5 else "NOT met"
            out.append(f"first apply on {s['hosts']} hosts: {r:.2f}x its critical path (target 1.5x): {verdict}")
        peak = max(m["peak_rss_mb"] for m in s["measures"])
        if s["hosts"] == 20:
            verdict = "met" if peak <= PEAK_RSS_TARGET_MB else "NOT met"
            out.append(f"peak memory on 20 hosts: {peak:.0f} MB (target {PEAK_RSS_TARGET_MB:.0f} MB): {verdict}")
    return out


def plot(sizes: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot written")
        return False
    ns = [s["hosts"] for s in sizes]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for cmd in COMMANDS:
        walls = [next(m["wall_s"] for m in s["measures"] if m["command"] == cmd) for s in sizes]
        (ax1 if cmd in ("first apply", "verify") else ax2).plot(ns, walls, marker="o", label=cmd)
    cps = [s["critical_path"]["total_s"] if s["critical_path"] else None for s in sizes]
    if all(c is not None for c in cps):
        ax1.plot(ns, cps, linestyle="--", color="grey", label="first apply critical path")
    for ax, title in ((ax1, "converging and verifying"), (ax2, "in sync: no-op apply and plan")):
        ax.set_xlabel("hosts")
        ax.set_ylabel("wall time (s)")
        ax.set_title(title)
        ax.set_xticks(ns)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("provisioner, playbooks/overlay.yml on the local lab")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--sizes", default="3,10,20", help="comma separated host counts (default 3,10,20)")
    ap.add_argument("--subnet", default=SUBNET, help=f"lab subnet (default {SUBNET})")
    ap.add_argument("--state-dir", type=Path, default=STATE, help=f"lab state directory (default {STATE})")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where results.json and the plot go")
    ap.add_argument("--keep", action="store_true", help="leave the last lab up")
    opts = ap.parse_args()
    try:
        sizes = sorted({int(x) for x in opts.sizes.split(",") if x.strip()})
    except ValueError:
        ap.error(f"--sizes must be comma separated integers, not {opts.sizes!r}")
    if not sizes or min(sizes) < 2:
        ap.error("every size must be at least 2 (one store host and one docker host)")
    opts.out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    env = machine()
    try:
        for n in sizes:
            results.append(bench_size(n, opts.subnet, opts.state_dir))
    finally:
        if not opts.keep:
            lab_down(state_dir=opts.state_dir, keep_image=True)
    doc: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip(),
        "machine": env,
        "sizes": results,
        "targets": targets(results),
    }
    (opts.out / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    print()
    print(table(results))
    print()
    print("\n".join(doc["targets"]))
    if plot(results, opts.out / "time_vs_hosts.png"):
        print(f"plot: {opts.out / 'time_vs_hosts.png'}")
    print(f"results: {opts.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
