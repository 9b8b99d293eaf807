"""A run as one self-contained HTML page (``--html FILE`` on plan, apply and verify).

Built from the run's JSON report (``RunReport.to_json()``, already redacted: secrets are *** there and
nothing here reads them from anywhere else), plus what the JSON does not carry: the engine and overlay
mode of each host (from the facts the run gathered) and the topology drawing (from the inventory).

The page fetches nothing: one inline stylesheet, no scripts, no fonts, no images but the inline SVG.
Everything is visible without JavaScript (no collapsed sections that need a click to read).
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provisioner.engine.results import diff_kind
from provisioner.errors import ProvisionerError, UsageError
from provisioner.matrix_text import Grid, causes, parse

if TYPE_CHECKING:
    from provisioner.facts import HostFacts
    from provisioner.inventory import Inventory


@dataclass(frozen=True)
class HostInfo:
    engine: str  # "docker.io 20.10.5+dfsg1-1+deb11u2"
    mode: str  # "kv", "swarm manager", "swarm worker"
    os: str = ""


def host_info(inventory: Inventory, facts: Mapping[str, HostFacts]) -> dict[str, HostInfo]:
    """Engine and overlay mode of every host whose facts the run gathered."""
    from provisioner.modules.capabilities import engine_of, overlay_mode

    mode = overlay_mode(inventory, facts)
    docker = set(inventory.docker_hosts())
    out: dict[str, HostInfo] = {}
    for host, f in facts.items():
        d = f.docker
        engine = engine_of(f).label if (d.installed or d.server_version) else "no Docker"
        if host not in docker:
            what = "store host" if inventory.kv_store is not None and host in inventory.kv_store.hosts else "-"
        elif mode.mode == "swarm":
            what = f"swarm {'manager' if d.swarm_manager else ('worker' if d.swarm_state == 'active' else 'to join')}"
        else:
            what = f"kv ({d.cluster_store or 'no cluster store yet'})"
        out[host] = HostInfo(engine, what, f.os.pretty_name or f.os.id)
    return out


def executor_facts(executor: object) -> dict[str, HostFacts]:
    """The facts an Executor gathered during its run (its per-host state has them)."""
    gathered = getattr(executor, "gathered_facts", None)
    return dict(gathered()) if callable(gathered) else {}


def topology_drawing(inventory: Inventory) -> tuple[str | None, str]:
    """(inline SVG or None without Graphviz, DOT text) of the inventory's topology."""
    from provisioner.graph import svg_inline, to_dot
    from provisioner.topology import build

    dot = to_dot(build(inventory))
    return svg_inline(dot), dot


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1b1b1b;background:#fff}
header{padding:14px 24px;color:#fff}
header.ok{background:#2e7d32}header.failed{background:#b71c1c}header.pending{background:#a05a00}
header h1{margin:0;font-size:20px}header p{margin:4px 0 0}
main{padding:8px 24px 40px;max-width:1400px}
h2{font-size:17px;border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:28px}
h3{font-size:15px;margin:18px 0 6px}h4{font-size:14px;margin:10px 0 4px}
table{border-collapse:collapse;margin:6px 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.n{text-align:right}
.s-ok{color:#2e7d32}.s-changed{color:#a05a00;font-weight:600}.s-failed,.s-unreachable{color:#b71c1c;font-weight:700}
.s-skipped{color:#00838f}
pre{background:#f7f7f7;border:1px solid #e3e3e3;padding:6px 8px;overflow-x:auto;
font:12px/1.4 ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;word-break:break-word}
pre .a{color:#1b5e20;background:#e8f5e9;display:block}pre .d{color:#b71c1c;background:#ffebee;display:block}
pre .h{color:#00695c;display:block}pre .f{font-weight:700;display:block}
.change{border-left:4px solid #a05a00;padding:2px 0 2px 10px;margin:8px 0}
.note{color:#6a1b9a}.problem{border-left:4px solid #b71c1c;padding:2px 0 2px 10px;margin:8px 0}
ul.steps{margin:4px 0;padding-left:20px;font:12px/1.4 ui-monospace,Menlo,Consolas,monospace}
table.grid td{text-align:center;min-width:44px;font-weight:600}
td.ok{background:#c8e6c9}td.iso{background:#e3f2e3;color:#2e5e30}td.FAIL{background:#ffcdd2;color:#7f0000}
td.na{background:#eee;color:#666}td.unk{background:#fff8e1;color:#6d5d00}td.self{background:#fafafa;color:#bbb}
td.FAIL small{display:block;font-weight:400;font-size:11px;max-width:220px}
.tl{display:flex;height:20px;border:1px solid #ccc;background:#fafafa;margin:2px 0 8px;min-width:200px}
.tl span{display:block;height:100%;overflow:hidden;white-space:nowrap;font-size:11px;line-height:20px;padding:0 2px;
border-right:1px solid #fff;box-sizing:border-box}
.tl .ok{background:#a5d6a7}.tl .changed{background:#ffcc80}.tl .failed{background:#ef9a9a}
.tl .skipped{background:#b2ebf2}.tl .unreachable{background:#ef9a9a}.tl .gap{background:transparent;padding:0}
.topo svg{max-width:100%;height:auto}
.muted{color:#666}
"""


def _status(s: str) -> str:
    return f'<span class="s-{_e(s)}">{_e(s)}</span>'


_DIFF_CLASS = {"file": "f", "add": "a", "del": "d", "hunk": "h", "": ""}


def _diff(diff: str) -> str:
    out = []
    for line in diff.splitlines():
        cls = _DIFF_CLASS[diff_kind(line)]
        out.append(f'<span class="{cls}">{_e(line)}</span>' if cls else _e(line) + "\n")
    return "<pre>" + "".join(out) + "</pre>"


def _change(c: Mapping[str, Any], plan: bool) -> str:
    parts = [f'<div class="change"><div><b>{_e(c.get("description", ""))}</b></div>']
    if c.get("requires") and plan:
        parts.append(f'<div class="note">! apply does this only with {_e(c["requires"])}</div>')
    parts.extend(f'<div class="note">! {_e(n)}</div>' for n in c.get("notes") or [])
    steps = c.get("steps")
    if steps is None:
        steps = c.get("commands") or []
    if steps:
        parts.append('<ul class="steps">' + "".join(f"<li>{_e(s)}</li>" for s in steps) + "</ul>")
    rollback = c.get("rollback") or []
    if rollback:
        parts.append(
            '<div class="muted">on failure:</div><ul class="steps">'
            + "".join(f"<li>{_e(s)}</li>" for s in rollback)
            + "</ul>"
        )
    if c.get("diff"):
        parts.append(_diff(str(c["diff"])))
    parts.append("</div>")
    return "".join(parts)


_CELL_CLASS = {
    "ok": "ok",
    "isolated": "iso",
    "FAIL": "FAIL",
    "BROKEN": "FAIL",
    "n/a": "na",
    "ok?": "unk",
    "none?": "unk",
}


def _grid_table(title: str, hosts: list[str], cells: Mapping[tuple[str, str], tuple[str, str]]) -> str:
    """One matrix as a coloured table; ``cells`` (from, to) -> (text, cause). A failed cell shows its
    cause in the cell itself (readable in a screenshot and without hovering) and as its title."""
    rows = [f"<h4>{_e(title)}</h4>", '<table class="grid"><tr><th></th>']
    rows.extend(f"<th>{_e(h)}</th>" for h in hosts)
    rows.append("</tr>")
    for src in hosts:
        rows.append(f"<tr><th>{_e(src)}</th>")
        for dst in hosts:
            text, cause = cells.get((src, dst), ("-", ""))
            cls = _CELL_CLASS.get(text, "self")
            title_attr = f' title="{_e(cause)}"' if cause else ""
            small = f"<small>{_e(cause)}</small>" if cause and cls == "FAIL" else ""
            rows.append(f'<td class="{cls}"{title_attr}>{_e(text)}{small}</td>')
        rows.append("</tr>")
    rows.append("</table>")
    return "".join(rows)


def _grid(g: Grid, why: Mapping[tuple[str, str, str], str]) -> str:
    """A matrix read back from the check's text, causes from its failure lines."""
    cells: dict[tuple[str, str], tuple[str, str]] = {}
    for (src, dst), cell in g.cells.items():
        started = why.get(("*", src, "*")) or why.get(("*", dst, "*"))
        if cell in ("FAIL", "BROKEN"):
            cause = why.get((g.network, src, dst)) or started or "see the causes below"
        elif cell == "n/a":
            cause = started or "a probe did not start"
        else:
            cause = ""
        cells[(src, dst)] = (cell, cause)
    return _grid_table(f"{g.network}: {g.title}", g.hosts, cells)


def _cell_text(pair: Mapping[str, Any]) -> str:
    """A pair's cell, as the terminal's matrix writes it."""
    observed, expected = pair.get("observed"), pair.get("expected")
    if observed == "not run":
        return "n/a"
    reached = observed == "reached"
    if expected == "unknown":
        return "ok?" if reached else "none?"
    if expected == "reach":
        return "ok" if reached else "FAIL"
    return "BROKEN" if reached else "isolated"


def grids_from_data(data: Mapping[str, Any]) -> str:
    """The matrices of a task's structured ``verify`` data (every pair with its expectation, what was
    observed, the verdict and the cause), one table per kind and network or port."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for pair in data.get("pairs") or []:
        if pair.get("network"):
            via = str(pair["network"]) + (f"@{pair['network_host']}" if pair.get("network_host") else "")
        else:
            via = str(pair.get("port") or "?")
        groups.setdefault((str(pair.get("kind", "")), via), []).append(pair)
    out = []
    for (kind, via), pairs in groups.items():
        hosts = list(dict.fromkeys([str(p.get("source")) for p in pairs] + [str(p.get("destination")) for p in pairs]))
        cells = {
            (str(p.get("source")), str(p.get("destination"))): (
                _cell_text(p),
                str(p.get("cause") or p.get("why") or ""),
            )
            for p in pairs
        }
        out.append(_grid_table(f"{via}: {kind} from (row) to (column)", hosts, cells))
    not_started = data.get("probes_not_started") or {}
    if not_started:
        out.append(
            "<p><b>probes that did not start</b></p><ul>"
            + "".join(f"<li>{_e(k)}: {_e(v)}</li>" for k, v in not_started.items())
            + "</ul>"
        )
    return "".join(out)


def _timeline(tasks: list[Mapping[str, Any]], longest: float) -> str:
    if not tasks or longest <= 0:
        return '<div class="muted">no task ran</div>'
    spans = []
    cursor = 0.0
    for t in tasks:
        d = float(t.get("duration") or 0.0)
        start = t.get("started")
        if isinstance(start, (int, float)) and start > cursor:
            # the host waited (for the other hosts of a task, a rolling restart, the lock): a gap
            spans.append(f'<span class="gap" style="width:{100.0 * (start - cursor) / longest:.2f}%"></span>')
            cursor = float(start)
        cursor += d
        pct = max(0.3, 100.0 * d / longest)
        label = f"{t.get('task', '')} ({t.get('status', '')}, {d:.2f}s)"
        status = _e(t.get("status", ""))
        spans.append(
            f'<span class="{status}" style="width:{pct:.2f}%" title="{_e(label)}">{_e(t.get("task", ""))}</span>'
        )
    return '<div class="tl">' + "".join(spans) + "</div>"


def render(
    report: Mapping[str, Any],
    *,
    title: str = "",
    hosts: Mapping[str, HostInfo] | None = None,
    svg: str | None = None,
    dot: str = "",
) -> str:
    """The page. ``report`` is ``RunReport.to_json()``; ``hosts`` the engine/mode per host; ``svg`` the
    inline topology drawing (else ``dot``, its text, is shown)."""
    hosts = hosts or {}
    mode = str(report.get("mode", ""))
    plan = mode == "plan"
    per_host: Mapping[str, Mapping[str, Any]] = report.get("hosts") or {}
    ok = bool(report.get("ok"))
    state = "failed" if not ok else ("pending" if plan and report.get("changed") else "ok")
    verdict = {
        "failed": "FAILED",
        "pending": "changes pending",
        "ok": "in sync" if plan else "OK",
    }[state]
    changed_word = "would change" if plan else "changed"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>provisioner {_e(mode)}: {_e(verdict)}{' - ' + _e(title) if title else ''}</title>",
        f"<style>{CSS}</style></head><body>",
        f'<header class="{state}"><h1>provisioner {_e(mode)}: {_e(verdict)}</h1>',
        f"<p>{_e(title)}{' · ' if title else ''}{len(per_host)} hosts · {_e(report.get('changed', 0))} "
        f"{changed_word} · {_e(report.get('failed', 0))} failed · {_e(report.get('unreachable', 0))} unreachable · "
        f"{float(report.get('duration') or 0):.2f}s</p></header><main>",
    ]
    # --- problems first: what a person opening a failed run's report needs
    problems = []
    if report.get("error"):
        problems.append(f'<div class="problem"><b>run stopped</b><pre>{_e(report["error"])}</pre></div>')
    for name, h in per_host.items():
        if h.get("unreachable"):
            problems.append(
                f'<div class="problem" id="unreachable-{_e(name)}"><b>{_e(name)}</b>: '
                f"{_status('unreachable')}<pre>{_e(h.get('unreachable_reason', ''))}</pre></div>"
            )
        for t in h.get("tasks") or []:
            if t.get("status") == "failed":
                problems.append(
                    f'<div class="problem"><b>{_e(name)}</b> · {_e(t.get("task", ""))}: {_status("failed")}'
                    f"<pre>{_e(t.get('message', ''))}</pre></div>"
                )
    if problems:
        out.append("<h2>Problems</h2>")
        out.extend(problems)
    # --- recap
    out.append("<h2>Recap</h2><table><tr><th>host</th><th>engine</th><th>mode</th><th>ok</th>")
    out.append(f"<th>{changed_word}</th><th>failed</th><th>skipped</th><th>unreachable</th></tr>")
    for name, h in per_host.items():
        info = hosts.get(name)
        out.append(
            f'<tr id="host-{_e(name)}"><th>{_e(name)}</th><td>{_e(info.engine if info else "-")}</td>'
            f"<td>{_e(info.mode if info else '-')}</td>"
            f'<td class="n">{_e(h.get("ok_tasks", 0))}</td><td class="n">{_e(h.get("changed", 0))}</td>'
            f'<td class="n">{_e(h.get("failed", 0))}</td><td class="n">{_e(h.get("skipped", 0))}</td>'
            f"<td>{_status('unreachable') if h.get('unreachable') else '0'}</td></tr>"
        )
    out.append("</table>")
    # --- changes
    out.append(f"<h2>Changes ({_e(report.get('changed', 0))} tasks {changed_word})</h2>")
    any_change = False
    for name, h in per_host.items():
        tasks = [t for t in h.get("tasks") or [] if t.get("changes")]
        if not tasks:
            continue
        any_change = True
        out.append(f'<h3 id="changes-{_e(name)}">{_e(name)}</h3>')
        for t in tasks:
            out.append(
                f"<h4>{_e(t.get('play', ''))} · {_e(t.get('task', ''))} ({_status(str(t.get('status', '')))})</h4>"
            )
            out.extend(_change(c, plan) for c in t["changes"])
    if not any_change:
        out.append('<p class="muted">no host has anything to change</p>')
    # --- verify
    checks = [
        (name, t)
        for name, h in per_host.items()
        for t in h.get("tasks") or []
        if t.get("verify") or (t.get("module", "").endswith("_verify") and t.get("message"))
    ]
    if checks:
        out.append("<h2>Verify</h2>")
        for name, t in checks:
            message = str(t.get("message", ""))
            out.append(f"<h3>{_e(t.get('task', ''))} (run from {_e(name)}): {_status(str(t.get('status', '')))}</h3>")
            data = t.get("verify")
            if isinstance(data, Mapping) and data.get("pairs"):
                out.append(grids_from_data(data))
            else:
                why = causes(message)
                out.extend(_grid(g, why) for g in parse(message))
            out.append(f"<pre>{_e(message)}</pre>")
    # --- timeline
    out.append("<h2>Timeline</h2>")
    out.append(
        '<p class="muted">each task of a host as a bar as long as it took, placed where it started in the run '
        "(hover a bar for its name, status and duration)</p>"
    )
    longest = max(
        [float(report.get("duration") or 0)]
        + [
            max((float(t.get("started") or 0) + float(t.get("duration") or 0) for t in h.get("tasks") or []), default=0)
            for h in per_host.values()
        ]
        + [sum(float(t.get("duration") or 0) for t in h.get("tasks") or []) for h in per_host.values()]
    )
    for name, h in per_host.items():
        tasks = list(h.get("tasks") or [])
        total = sum(float(t.get("duration") or 0) for t in tasks)
        out.append(f"<div><b>{_e(name)}</b> <span class='muted'>{len(tasks)} tasks, {total:.2f}s</span></div>")
        out.append(_timeline(tasks, longest))
    # --- topology
    out.append('<h2>Topology</h2><div class="topo">')
    if svg:
        out.append(svg)
    elif dot:
        out.append(
            '<p class="muted">Graphviz was not installed where this report was made, so here is the drawing as '
            "DOT text (paste it into any Graphviz viewer, or install graphviz and run "
            "<code>provisioner graph -i INVENTORY -o cluster.svg</code>).</p>"
        )
        out.append(f"<pre>{_e(dot)}</pre>")
    out.append("</div></main></body></html>\n")
    return "\n".join(out)


def write(
    path: Path,
    report: Mapping[str, Any],
    *,
    inventory: Inventory | None = None,
    facts: Mapping[str, HostFacts] | None = None,
) -> None:
    info = host_info(inventory, facts or {}) if inventory is not None else {}
    svg, dot = topology_drawing(inventory) if inventory is not None else (None, "")
    title = inventory.source.name if inventory is not None and inventory.source is not None else ""
    page = render(report, title=title, hosts=info, svg=svg, dot=dot)
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as e:
        # after the run: not an input error (exit 2 says nothing was contacted), the report is lost
        raise ProvisionerError(
            f"--html {path}: cannot write the report: {e.strerror or e}\n"
            "    fix: choose a path in a folder you can write to; the run itself finished (its recap is above)"
        ) from e


def check_writable(path: Path) -> None:
    """Before the run: the report's folder must exist (a run should not end without its report)."""
    if path.is_dir():
        raise UsageError(f"--html {path} is a folder\n    fix: give a file name, e.g. {path / 'report.html'}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"--html {path}: folder {parent} does not exist\n    fix: create it (mkdir -p {parent})")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(
            f"--html {path}: not writable by this user\n    fix: pick a path you can write to, or fix its permissions"
        )
