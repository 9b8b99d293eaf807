"""Drawing a :class:`~provisioner.topology.Topology`: DOT and Mermaid text written here, SVG and PNG
rendered by Graphviz's ``dot``.

The text forms depend only on the topology (no timestamps, no dict-order surprises), so the same
inventory and facts give the same bytes; tests compare them with golden files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioner.errors import ProvisionerError, UsageError
from provisioner.topology import Edge, Node, Topology

FORMATS = {".dot": "dot", ".gv": "dot", ".mmd": "mermaid", ".svg": "svg", ".png": "png"}
GRAPHVIZ_INSTALL = "install Graphviz (Debian: apt-get install graphviz; bin/setup does)"
GRAPHVIZ_FIX = f"{GRAPHVIZ_INSTALL}, or write .dot or .mmd instead"

# fill colour per node kind; border colour and style per drift mark
_FILL = {
    "dockerd": "#dbe9f6",
    "store": "#fde9c8",
    "interface": "#e8e8e8",
    "network": "#d9f2d9",
    "builtin": "#f2f2f2",
    "container": "#ffffff",
    "underlay": "#eeeeee",
}
_SHAPE = {"interface": "cds", "underlay": "box3d", "container": "component"}
_MARK_COLOR = {
    "": "#555555",
    "missing": "#cc0000",
    "extra": "#e07000",
    "different": "#b000b0",
    "unreachable": "#cc0000",
    "unknown": "#999999",
}
_EDGE_STYLE = {
    "store": ("dashed", "#a06000"),
    "swarm": ("dashed", "#1f5fa0"),
    "vxlan": ("bold", "#2e7d32"),
    "nat": ("solid", "#555555"),
    "parent": ("solid", "#6a1b9a"),
    "attach": ("solid", "#333333"),
    "uplink": ("solid", "#999999"),
    "publish": ("bold", "#0d47a1"),
}


_WIDTH = 48  # characters per label line


class GraphError(ProvisionerError):
    """The picture could not be written or rendered (the text form may still have been written)."""


def output_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(
            f"-o {path}: unknown picture format {path.suffix or '(no extension)'!r}\n"
            f"    fix: end the file name with one of {', '.join(sorted(FORMATS))} "
            "(.dot/.mmd: text written by provisioner; .svg/.png: rendered by Graphviz)"
        )
    return fmt


# --- DOT ------------------------------------------------------------------------------------------


def _dq(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _wrap(lines: tuple[str, ...] | list[str]) -> list[str]:
    """Long lines (drift explanations, unreachable reasons) folded so boxes stay narrow."""
    return [part for line in lines for part in (textwrap.wrap(line, _WIDTH, break_on_hyphens=False) or [""])]


def _dot_label(lines: tuple[str, ...]) -> str:
    return _dq("\n".join(_wrap(lines)))


def _dot_node(n: Node, indent: str) -> str:
    color = _MARK_COLOR[n.mark]
    style = ["filled", "rounded" if n.kind not in _SHAPE else ""]
    if n.mark in ("missing", "unknown"):
        style.append("dashed")
    if n.mark in ("missing", "extra", "different"):
        style.append("bold")
    attrs = [
        f"label={_dot_label(n.lines)}",
        f"shape={_SHAPE.get(n.kind, 'box')}",
        f"style={_dq(','.join(s for s in style if s))}",
        f"fillcolor={_dq(_FILL[n.kind] if n.mark != 'unknown' else '#f4f4f4')}",
        f"color={_dq(color)}",
    ]
    if n.mark in ("unknown",):
        attrs.append('fontcolor="#777777"')
    return f"{indent}{n.id} [{', '.join(attrs)}];"


_CHECK_COLOR = {"reached": "#1b9e1b", "isolated": "#1565c0", "broken": "#cc0000"}


def _dot_edge(e: Edge) -> str:
    style, color = _EDGE_STYLE[e.kind]
    if e.mark:
        color = _MARK_COLOR[e.mark]
        style = "dashed" if e.mark in ("missing", "unknown") else style
    if e.check:
        color = _CHECK_COLOR[e.check]
        style = "dotted" if e.check == "isolated" else "bold"
    attrs = [f"style={style}", f"color={_dq(color)}"]
    if e.label:
        attrs.append(f"label={_dq(e.label)}")
        attrs.append(f"fontcolor={_dq(color)}")
    if e.kind in ("vxlan", "uplink", "attach"):
        attrs.append("dir=none")
    return f"  {e.src} -> {e.dst} [{', '.join(attrs)}];"


def to_dot(topo: Topology) -> str:
    out = [
        f"// provisioner graph: {topo.title}",
        "digraph cluster {",
        f"  graph [label={_dq(topo.title)}, labelloc=t, fontname=Helvetica, fontsize=12, "
        'rankdir=TB, nodesep=0.3, ranksep=0.6, newrank=true, bgcolor="white"];',
        '  node [fontname=Helvetica, fontsize=10, margin="0.12,0.06"];',
        "  edge [fontname=Helvetica, fontsize=9];",
    ]
    overlays = [n for n in topo.shared if n.kind != "underlay"]
    if overlays:
        out.append("  { rank=min;")
        out.extend(_dot_node(n, "    ") for n in overlays)
        out.append("  }")
    for box in topo.hosts:
        color = _MARK_COLOR[box.mark]
        style = "rounded,dashed,bold" if box.mark == "unreachable" else "rounded"
        out.append(f"  subgraph cluster_{box.id} {{")
        out.append(
            f"    label={_dot_label(box.lines)}; style={_dq(style)}; color={_dq(color)}; "
            f'fontsize=11; bgcolor="{"#fff4f4" if box.mark == "unreachable" else "#fbfbfb"}";'
        )
        out.extend(_dot_node(n, "    ") for n in box.nodes)
        out.append("  }")
    underlay = [n for n in topo.shared if n.kind == "underlay"]
    if underlay:
        out.append("  { rank=max;")
        out.extend(_dot_node(n, "    ") for n in underlay)
        out.append("  }")
    out.extend(_dot_edge(e) for e in topo.edges)
    out.append("}")
    return "\n".join(out) + "\n"


# --- Mermaid --------------------------------------------------------------------------------------


def _mq(lines: tuple[str, ...] | list[str]) -> str:
    """A Mermaid label: quoted, lines joined with <br/>; quotes and markup characters as entities."""
    esc = [
        ln.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;") for ln in _wrap(lines)
    ]
    return '"' + "<br/>".join(esc) + '"'


_MM_SHAPE = {"interface": ('[/"', '"/]'), "underlay": ('[("', '")]'), "network": ('(["', '"])')}


def _mm_node(n: Node, indent: str) -> str:
    open_, close = _MM_SHAPE.get(n.kind, ('["', '"]'))
    return f"{indent}{n.id}{open_}{_mq(n.lines)[1:-1]}{close}"


def _mm_edge(e: Edge) -> str:
    dashed = e.kind in ("store", "swarm") or e.mark in ("missing", "unknown") or e.check == "isolated"
    if e.kind in ("vxlan", "uplink", "attach"):
        arrow = "-.-" if dashed else ("===" if e.kind == "vxlan" else "---")
    else:
        arrow = "-.->" if dashed else "-->"
    label = f"|{_mq([e.label])}|" if e.label else ""
    return f"  {e.src} {arrow}{label} {e.dst}"


def to_mermaid(topo: Topology) -> str:
    out = ["%% provisioner graph: " + topo.title.replace("\n", " "), "flowchart TB"]
    out.extend(_mm_node(n, "  ") for n in topo.shared if n.kind != "underlay")
    for box in topo.hosts:
        out.append(f"  subgraph {box.id}[{_mq(box.lines)}]")
        out.append("    direction TB")
        out.extend(_mm_node(n, "    ") for n in box.nodes)
        out.append("  end")
    out.extend(_mm_node(n, "  ") for n in topo.shared if n.kind == "underlay")
    out.extend(_mm_edge(e) for e in topo.edges)
    for kind, fill in _FILL.items():
        out.append(f"  classDef {kind} fill:{fill},stroke:#555555,color:#000000")
    for mark in ("missing", "extra", "different", "unknown"):
        dash = ",stroke-dasharray:5 5" if mark in ("missing", "unknown") else ""
        out.append(f"  classDef {mark} stroke:{_MARK_COLOR[mark]},stroke-width:2px{dash}")
    nodes = [*topo.shared, *(n for b in topo.hosts for n in b.nodes)]
    by_class: dict[str, list[str]] = {}
    for n in nodes:
        by_class.setdefault(n.kind, []).append(n.id)
        if n.mark:
            by_class.setdefault(n.mark, []).append(n.id)
    # kinds first, then marks, so a mark's border wins
    for cls in [*_FILL, "missing", "extra", "different", "unknown"]:
        if cls in by_class:
            out.append(f"  class {','.join(by_class[cls])} {cls}")
    for i, e in enumerate(topo.edges):  # link styles go by the edge's position in the file
        if e.check:
            out.append(f"  linkStyle {i} stroke:{_CHECK_COLOR[e.check]},stroke-width:3px")
    for box in topo.hosts:
        if box.mark == "unreachable":
            out.append(f"  style {box.id} stroke:{_MARK_COLOR['unreachable']},stroke-width:2px,stroke-dasharray:5 5")
    return "\n".join(out) + "\n"


# --- rendering and writing ------------------------------------------------------------------------


def read_check_pairs(path: Path) -> list[dict[str, Any]]:
    """The checked pairs of a saved JSON report, for ``graph --verify``; UsageError when there are none."""
    import json

    from provisioner.topology import check_pairs

    fix = f"    fix: save one with `provisioner verify -i INVENTORY --output json > {path}`"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"--verify {path}: cannot read it: {e.strerror or e}\n{fix}") from e
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"--verify {path}: not a JSON report ({e})\n{fix}") from e
    pairs = check_pairs(report) if isinstance(report, dict) else []
    if not pairs:
        raise UsageError(f"--verify {path}: the report holds no check results (no task has 'verify' data)\n{fix}")
    return [dict(p) for p in pairs]


def graphviz() -> str | None:
    return shutil.which("dot")


def render(dot_text: str, fmt: str, timeout: float = 60) -> bytes:
    """SVG or PNG bytes from DOT text, by Graphviz's ``dot``; GraphError when it is missing or fails."""
    exe = graphviz()
    if exe is None:
        raise GraphError(
            f"Graphviz's 'dot' is not installed, so no {fmt.upper()} can be drawn\n    fix: {GRAPHVIZ_FIX}"
        )
    try:
        res = subprocess.run(  # noqa: S603 - Graphviz found on PATH, fixed arguments
            [exe, f"-T{fmt}"], input=dot_text.encode(), capture_output=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise GraphError(f"could not run {exe}: {e}\n    fix: {GRAPHVIZ_FIX}") from e
    if res.returncode != 0 or not res.stdout:
        tail = res.stderr.decode(errors="replace").strip()[-500:]
        raise GraphError(
            f"{exe} -T{fmt} failed (exit {res.returncode}): {tail or 'no output'}\n"
            "    fix: this is a bug in provisioner's DOT output if Graphviz itself works; write .dot and report it"
        )
    return res.stdout


def svg_inline(dot_text: str) -> str | None:
    """The drawing as an SVG element to put inside an HTML page (no XML prolog or DOCTYPE), or None
    when Graphviz is not installed or fails."""
    try:
        svg = render(dot_text, "svg").decode("utf-8", errors="replace")
    except GraphError:
        return None
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else None


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as e:
        raise UsageError(
            f"cannot write {path}: {e.strerror or e}\n"
            f"    fix: choose a path in an existing folder you can write to (the folder is {path.parent.resolve()})"
        ) from e


@dataclass(frozen=True)
class Written:
    path: Path
    fallback: list[Path]  # text forms written instead when the picture could not be rendered
    problem: str = ""


def check_writable(path: Path) -> None:
    """Before gathering anything: the folder must exist and ``path`` must not be a folder."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(f"-o {path} is a folder\n    fix: give a file name, e.g. {path / 'cluster.svg'}")
    if not parent.is_dir():
        raise UsageError(
            f"-o {path}: folder {parent} does not exist\n    fix: create it (mkdir -p {parent}) or pick another path"
        )
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(
            f"-o {path}: not writable by this user\n    fix: pick a path you can write to, or fix its permissions"
        )


def write(topo: Topology, path: Path) -> Written:
    """Write the drawing in the format the extension names. Without Graphviz (or when it fails) the DOT
    and Mermaid text are written beside ``path`` and the result says why and how to fix it."""
    fmt = output_format(path)
    dot_text = to_dot(topo)
    if fmt == "dot":
        _write(path, dot_text.encode())
        return Written(path, [])
    if fmt == "mermaid":
        _write(path, to_mermaid(topo).encode())
        return Written(path, [])
    try:
        _write(path, render(dot_text, fmt))
        return Written(path, [])
    except GraphError as e:
        dot_path, mmd_path = path.with_suffix(".dot"), path.with_suffix(".mmd")
        _write(dot_path, dot_text.encode())
        _write(mmd_path, to_mermaid(topo).encode())
        first = str(e).partition("\n")[0]
        fix = f"{GRAPHVIZ_INSTALL}, then: dot -T{fmt} {dot_path} -o {path}"
        return Written(path, [dot_path, mmd_path], f"{first}\n    fix: {fix}")
