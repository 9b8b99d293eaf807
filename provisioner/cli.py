"""The command line: parse, call the engine, render, exit with the contract's code.

Exit codes: 0 success / in sync; 1 a host failed or was unreachable; 2 invalid input (nothing was
contacted); 3 ``plan`` found changes pending. Heavy libraries (paramiko, docker, consul) are imported
only by the commands that need them.
"""

from __future__ import annotations

import sys
import traceback
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from provisioner import __version__
from provisioner.errors import (
    EXIT_CHANGES_PENDING,
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_OK,
    ProvisionerError,
    UsageError,
)

if TYPE_CHECKING:
    from provisioner.engine.results import RunReport
    from provisioner.facts import HostFacts
    from provisioner.inventory import Inventory
    from provisioner.playbook import Playbook

app = typer.Typer(
    name="provisioner",
    help="Declarative provisioner for multi-host Docker networking (Consul/etcd store, overlay networks).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class Output(StrEnum):
    human = "human"
    json = "json"


InventoryOpt = Annotated[
    Path, typer.Option("--inventory", "-i", help="inventory file (YAML, inventory v1)", show_default=False)
]
LimitOpt = Annotated[
    str | None, typer.Option("--limit", "-l", help="only these hosts/groups (comma separated, !x excludes)")
]
ForksOpt = Annotated[int, typer.Option("--forks", "-f", min=1, help="hosts worked on in parallel")]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="human or json (the JSON report)")]
JunitOpt = Annotated[Path | None, typer.Option("--junit", help="also write JUnit XML to this file")]
HtmlOpt = Annotated[
    Path | None, typer.Option("--html", help="also write a self-contained HTML report (open it in a browser)")
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="also say why unchanged tasks are ok")]


def _version(value: bool) -> None:
    if value:
        print(f"provisioner {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """Declarative provisioner for multi-host Docker networking."""


def _console(stderr: bool = False) -> Console:
    # in CI logs (not a terminal) long lines stay whole instead of being wrapped at 80 columns
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, highlight=False, soft_wrap=not stream.isatty())


def _load(inventory: Path, playbook: Path | None) -> tuple[Inventory, Playbook | None]:
    from provisioner.inventory import load_inventory

    inv = load_inventory(inventory)
    pb = None
    if playbook is not None:
        from provisioner.playbook import load_playbook

        pb = load_playbook(playbook, inv)
    return inv, pb


def _limit(inv: Inventory, limit: str | None) -> list[str] | None:
    if limit is None:
        return None
    try:
        return inv.resolve_pattern(limit)
    except ValueError as e:
        raise UsageError(f"--limit {limit!r}: {e}") from e


def _finish(
    report: RunReport,
    output: Output,
    junit: Path | None,
    *,
    plan: bool,
    html: Path | None = None,
    inv: Inventory | None = None,
    executor: object = None,
) -> int:
    from provisioner import report as render

    if junit is not None:
        render.write_junit(report, junit)
    if output is Output.json:
        print(render.to_json(report))
    else:
        render.recap(_console(), report)
    if html is not None:  # after the recap: a page that cannot be written must not hide the run's result
        from provisioner import html_report

        html_report.write(html, report.to_json(), inventory=inv, facts=html_report.executor_facts(executor))
    if not report.ok:
        return EXIT_FAILED
    if plan and report.changed:
        return EXIT_CHANGES_PENDING
    return EXIT_OK


def _run_playbook(
    inventory: Path,
    playbook: Path,
    *,
    check: bool,
    limit: str | None,
    forks: int,
    output: Output,
    junit: Path | None,
    options: dict[str, Any],
    lock_timeout: float = 0.0,
    break_lock: bool = False,
    html: Path | None = None,
) -> int:
    from provisioner.connect import ssh_connector
    from provisioner.engine.executor import Executor, LockSpec
    from provisioner.report import LiveEvents

    if html is not None:
        from provisioner.html_report import check_writable

        check_writable(html)
    inv, pb = _load(inventory, playbook)
    assert pb is not None
    hosts = _limit(inv, limit)
    events = LiveEvents(
        _console(stderr=output is Output.json),
        show_diff=check or bool(options.get("diff")),
        verbose=bool(options.get("verbose")),
    )
    # plan changes nothing, so only apply takes the cluster lock
    lock = None if check else LockSpec(inv.lock_host(), lock_timeout, break_lock)
    ex = Executor(
        inv, ssh_connector(inv), check=check, forks=forks, limit=hosts, options=options, events=events, lock=lock
    )
    report = ex.run(pb)
    return _finish(report, output, junit, plan=check, html=html, inv=inv, executor=ex)


def _guard(fn: Any, *args: Any, **kwargs: Any) -> None:
    """Run a command body; turn our errors into a message and the contract's exit code."""
    try:
        code = fn(*args, **kwargs)
    except ProvisionerError as e:
        _console(stderr=True).print(f"[bold red]error:[/] {e}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        _console(stderr=True).print("interrupted")
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception:
        # a bug, not a user mistake: keep the traceback, it is what a bug report needs
        traceback.print_exc()
        print("internal error: this is a bug in provisioner; please report it with the output above", file=sys.stderr)
        raise typer.Exit(EXIT_FAILED) from None
    raise typer.Exit(code or EXIT_OK)


@app.command()
def validate(
    inventory: InventoryOpt,
    playbook: Annotated[Path | None, typer.Argument(help="playbook to validate as well")] = None,
) -> None:
    """Validate an inventory (and a playbook); contacts no host. Exit 2 on any problem."""

    def body() -> int:
        inv, pb = _load(inventory, playbook)
        what = f"{inventory}: {len(inv.hosts)} hosts, {len(inv.networks)} networks"
        if pb is not None:
            what += f"; {playbook}: {len(pb.plays)} plays, {sum(len(p.tasks) for p in pb.plays)} tasks"
        _console().print(f"valid: {what}")
        return EXIT_OK

    _guard(body)


@app.command()
def plan(
    inventory: InventoryOpt,
    playbook: Annotated[Path, typer.Argument(help="playbook to plan")],
    limit: LimitOpt = None,
    forks: ForksOpt = 50,
    output: OutputOpt = Output.human,
    junit: JunitOpt = None,
    html: HtmlOpt = None,
    verbose: VerboseOpt = False,
    recreate_networks: Annotated[
        bool, typer.Option("--recreate-networks", help="plan recreating networks whose settings drifted")
    ] = False,
    prune: Annotated[bool, typer.Option("--prune", help="plan removing managed containers no longer declared")] = False,
    adopt: Annotated[
        bool, typer.Option("--adopt", help="plan replacing unmanaged containers that have a declared name")
    ] = False,
) -> None:
    """Dry run: per-host diffs and planned actions; changes nothing. Exit 3 when changes are pending."""
    _guard(
        _run_playbook,
        inventory,
        playbook,
        check=True,
        limit=limit,
        forks=forks,
        output=output,
        junit=junit,
        html=html,
        options={"recreate_networks": recreate_networks, "prune": prune, "adopt": adopt, "verbose": verbose},
    )


@app.command()
def apply(
    inventory: InventoryOpt,
    playbook: Annotated[Path, typer.Argument(help="playbook to apply")],
    limit: LimitOpt = None,
    forks: ForksOpt = 50,
    output: OutputOpt = Output.human,
    junit: JunitOpt = None,
    html: HtmlOpt = None,
    verbose: VerboseOpt = False,
    diff: Annotated[bool, typer.Option("--diff", help="show file diffs while applying")] = False,
    recreate_networks: Annotated[
        bool,
        typer.Option("--recreate-networks", help="recreate networks whose settings drifted (disconnects containers)"),
    ] = False,
    prune: Annotated[
        bool, typer.Option("--prune", help="remove managed containers no longer declared (else left, and said so)")
    ] = False,
    adopt: Annotated[
        bool,
        typer.Option("--adopt", help="replace unmanaged containers that have a declared name (else refused)"),
    ] = False,
    lock_timeout: Annotated[
        float, typer.Option("--lock-timeout", min=0, help="seconds to wait for another run's cluster lock")
    ] = 60.0,
    break_lock: Annotated[
        bool, typer.Option("--break-lock", help="take the cluster lock even if another run holds it")
    ] = False,
) -> None:
    """Converge the hosts to the playbook. Exit 1 when a host failed or was unreachable."""
    _guard(
        _run_playbook,
        inventory,
        playbook,
        check=False,
        limit=limit,
        forks=forks,
        output=output,
        junit=junit,
        html=html,
        options={
            "recreate_networks": recreate_networks,
            "prune": prune,
            "adopt": adopt,
            "diff": diff,
            "verbose": verbose,
        },
        lock_timeout=lock_timeout,
        break_lock=break_lock,
    )


@app.command()
def unlock(
    inventory: InventoryOpt,
    force: Annotated[bool, typer.Option("--force", help="break the lock without asking")] = False,
) -> None:
    """Show who holds the cluster lock and break it (for a run that died without releasing it)."""

    def body() -> int:
        from provisioner.connect import ssh_connector
        from provisioner.engine.lock import break_lock, describe, is_stale, read_owner

        inv, _ = _load(inventory, None)
        host = inv.lock_host()
        conn = ssh_connector(inv)(host)
        try:
            owner = read_owner(conn)
            if owner is None:
                _console().print(f"no run holds the cluster lock on {host}")
                return EXIT_OK
            state = "stale: that process is gone" if is_stale(owner) else "its process may still be running"
            _console().print(f"cluster lock on {host} held by {describe(owner)} ({state})")
            if not force and not (sys.stdin.isatty() and typer.confirm("break it?", default=False)):
                _console().print("left in place; pass --force to break it")
                return EXIT_FAILED
            break_lock(conn)
            _console().print("lock broken")
            return EXIT_OK
        finally:
            conn.close()

    _guard(body)


@app.command()
def verify(
    inventory: InventoryOpt,
    network: Annotated[str | None, typer.Option("--network", help="only this inventory network")] = None,
    pattern: Annotated[
        str | None, typer.Option("--hosts", help="hosts taking part (pattern) [default: docker.group]")
    ] = None,
    output: OutputOpt = Output.human,
    junit: JunitOpt = None,
    html: HtmlOpt = None,
) -> None:
    """Checks what the inventory declares; changes no configuration. Exit 1 unless every expectation holds.

    With containers declared: their matrices (reach and isolation per network, published ports, NAT
    out, namespaces), plus the probe ping matrix of overlay networks no container uses. Without (or
    with --network): the probe ping matrix over the overlay networks."""

    def body() -> int:
        from provisioner.connect import ssh_connector
        from provisioner.engine.executor import Executor
        from provisioner.modules.container_verify import ContainerVerifyArgs
        from provisioner.modules.overlay_verify import OverlayVerifyArgs
        from provisioner.playbook import Play, Playbook, Task
        from provisioner.report import LiveEvents

        if html is not None:
            from provisioner.html_report import check_writable

            check_writable(html)
        inv, _ = _load(inventory, None)
        hosts = pattern if pattern is not None else inv.docker.group
        try:
            targets = inv.resolve_pattern(hosts)
        except ValueError as e:
            raise UsageError(f"--hosts {hosts!r}: {e}") from e
        declared = [c for c in inv.containers.values() if c.state == "present"]
        if declared and network is None:
            used = {n for c in declared for n in c.networks}
            bare = [n for n, spec in inv.networks.items() if spec.driver == "overlay" and n not in used]
            tasks = [
                Task(name="container checks", module="container_verify", args=ContainerVerifyArgs(), run_once=True)
            ]
            tasks += [
                Task(
                    name=f"ping matrix {n}",
                    module="overlay_verify",
                    args=OverlayVerifyArgs(network=n, hosts=hosts),
                    run_once=True,
                )
                for n in bare
            ]
            # the containers' hosts take part too (their engine and firewall facts set the expectations)
            targets = list(dict.fromkeys([*targets, *(c.host for c in declared)]))
        else:
            args = OverlayVerifyArgs(network=network, hosts=hosts)
            tasks = [Task(name="ping matrix", module="overlay_verify", args=args, run_once=True)]
        play = Play(name="verify", hosts=targets, pattern=hosts, tasks=tasks)
        events = LiveEvents(_console(stderr=output is Output.json), show_diff=False, verbose=True)
        ex = Executor(inv, ssh_connector(inv), check=False, events=events, mode="verify", options={"verify": True})
        report = ex.run(Playbook(plays=[play], source=inventory))
        return _finish(report, output, junit, plan=False, html=html, inv=inv, executor=ex)

    _guard(body)


def _gather_facts(inv: Inventory, hosts: list[str], forks: int) -> dict[str, HostFacts | str]:
    """Facts of each host, gathered in parallel; a host that cannot be reached gets its error instead."""
    from concurrent.futures import ThreadPoolExecutor

    from provisioner.connect import ssh_connector
    from provisioner.facts import gather

    connect = ssh_connector(inv)

    def one(host: str) -> HostFacts | str:
        try:
            conn = connect(host)
            try:
                return gather(
                    conn, files=[inv.docker.dropin, inv.docker.daemon_json], dropin=inv.docker.dropin, sections="all"
                )
            finally:
                conn.close()
        except ProvisionerError as e:
            return str(e)

    with ThreadPoolExecutor(max_workers=forks) as pool:
        return dict(zip(hosts, pool.map(one, hosts), strict=True))


@app.command()
def facts(
    inventory: InventoryOpt,
    limit: LimitOpt = None,
    forks: ForksOpt = 50,
    output: OutputOpt = Output.human,
) -> None:
    """What each host runs: OS, Docker version and build, cluster store, swarm state, networks."""

    def body() -> int:
        import json

        from provisioner.facts import HostFacts

        inv, _ = _load(inventory, None)
        gathered = _gather_facts(inv, _limit(inv, limit) or list(inv.hosts), forks)
        if output is Output.json:
            print(
                json.dumps(
                    {h: (f.model_dump() if isinstance(f, HostFacts) else {"error": f}) for h, f in gathered.items()},
                    indent=2,
                )
            )
        else:
            from provisioner.report import facts_table

            facts_table(_console(), gathered)
        return EXIT_FAILED if any(isinstance(f, str) for f in gathered.values()) else EXIT_OK

    _guard(body)


@app.command()
def graph(
    inventory: InventoryOpt,
    out: Annotated[
        Path | None,
        typer.Option(
            "--output-file", "-o", help=".dot, .mmd (Mermaid), .svg or .png (Graphviz); default: DOT on stdout"
        ),
    ] = None,
    live: Annotated[
        bool, typer.Option("--live", help="draw what the hosts' facts say (contacts them, read-only) and mark drift")
    ] = False,
    checks: Annotated[
        Path | None,
        typer.Option("--verify", help="colour links by the checks in this JSON report (verify --output json)"),
    ] = None,
    forks: ForksOpt = 50,
) -> None:
    """The cluster as a picture: hosts, the store, networks, containers (--live) and the way out.

    Without --live it draws the inventory and contacts nothing. Exit 1 when a host is unreachable
    (it is drawn and marked) or the picture could not be rendered (the .dot/.mmd text is written)."""

    def body() -> int:
        from provisioner import graph as draw
        from provisioner.topology import build

        if out is not None:
            draw.output_format(out)
            draw.check_writable(out)
        pairs = draw.read_check_pairs(checks) if checks is not None else None
        inv, _ = _load(inventory, None)
        topo = build(inv, _gather_facts(inv, list(inv.hosts), forks) if live else None, pairs)
        err = _console(stderr=True)
        code = EXIT_FAILED if topo.unreachable else EXIT_OK
        if out is None:
            sys.stdout.write(draw.to_dot(topo))
        else:
            written = draw.write(topo, out)
            if written.problem:
                err.print(f"error: {written.problem}", markup=False)
                err.print(f"wrote the text forms instead: {', '.join(map(str, written.fallback))}", markup=False)
                code = EXIT_FAILED
            else:
                err.print(f"wrote {out}", markup=False)
        for line in topo.findings:
            err.print(f"  {line}", markup=False)
        if live and not topo.findings:
            err.print("no drift: the hosts match the inventory", markup=False)
        return code

    _guard(body)


def _mount_optional() -> None:
    """Sub-apps and commands that live in their own modules (kept importable without them)."""
    try:
        from provisioner.lab.cli import app as lab_app
    except ImportError:  # pragma: no cover - lab not installed in a trimmed build
        return
    app.add_typer(lab_app, name="lab", help="The local lab: real systemd hosts with sshd and dockerd, on this machine.")


_mount_optional()


def _terminate(signum: int, _frame: object) -> None:
    # SIGTERM (CI cancelling a job) unwinds like Ctrl-C: running host steps finish, the lock is released
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    except SystemExit as e:
        code = e.code
        # click reports usage errors with exit 2 already; keep the contract's codes as they are
        sys.exit(code if isinstance(code, int) else (EXIT_INVALID if code else EXIT_OK))
