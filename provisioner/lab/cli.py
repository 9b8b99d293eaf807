"""`provisioner lab up|down|status` (mounted by the main CLI). docker is imported only when a command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from provisioner.errors import ProvisionerError
from provisioner.lab import paths

app = typer.Typer(
    name="lab",
    help="A local cluster of real hosts (systemd, sshd, dockerd in containers) for demos and e2e tests.",
    no_args_is_help=True,
)

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Lab state directory [default: $PROVISIONER_LAB_DIR or /var/lib/provisioner/lab].",
        show_default=False,
    ),
]


def _fail(err: ProvisionerError) -> typer.Exit:
    typer.echo(f"error: {err}", err=True)
    return typer.Exit(err.exit_code)


@app.command()
def up(
    hosts: Annotated[int, typer.Option("--hosts", min=1, help="Number of hosts (the first is the kv host).")] = 3,
    suite: Annotated[
        str,
        typer.Option(
            "--suite",
            help="Debian release of the hosts: bullseye (docker.io 20.10.5, Consul works) | bookworm (20.10.24, "
            "no Consul backend) | trixie (26.1.5) | forky (28.5.2). Several, comma separated, make a mixed lab: "
            "hosts take them in turn, lab1 (the kv host) the first: --suite bullseye,trixie gives lab1 bullseye, "
            "lab2 trixie, lab3 bullseye.",
        ),
    ] = "bullseye",
    subnet: Annotated[str, typer.Option("--subnet", help="Lab bridge subnet, inside 198.18.0.0/15.")] = (
        paths.DEFAULT_SUBNET
    ),
    engine: Annotated[
        str | None,
        typer.Option("--engine", help="Docker engine URL to use [default: $DOCKER_HOST, else a private dockerd]."),
    ] = None,
    state_dir: StateDir = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output (for CI).")] = False,
) -> None:
    """Bring the lab up (idempotent; --hosts grows or shrinks it) and write its inventory."""
    from provisioner.lab.core import lab_up

    try:
        info = lab_up(hosts=hosts, suite=suite, subnet=subnet, state_dir=state_dir, quiet=quiet, engine_url=engine)
    except ProvisionerError as err:
        raise _fail(err) from None
    for name, address in info.hosts:
        typer.echo(f"{name}\t{address}")
    typer.echo(f"inventory: {info.inventory_path}")
    if not quiet:
        first = info.hosts[0][1]
        typer.echo(f"ssh:       ssh -i {info.key_path} -o UserKnownHostsFile={info.known_hosts_path} root@{first}")


@app.command()
def down(
    state_dir: StateDir = None,
    keep_image: Annotated[
        bool, typer.Option("--keep-image", help="Keep the host image in the engine (faster next `up`).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Remove the lab's hosts, volumes, network, iptables rules and private dockerd."""
    from provisioner.lab.core import lab_down

    try:
        done = lab_down(state_dir=state_dir, keep_image=keep_image, quiet=quiet)
    except ProvisionerError as err:
        raise _fail(err) from None
    if not quiet:
        typer.echo("\n".join(done) if done else "no lab to take down")


@app.command()
def status(state_dir: StateDir = None) -> None:
    """List the lab's hosts, addresses and state (ready = sshd answers and docker is active)."""
    from provisioner.lab.core import lab_status

    try:
        st = lab_status(state_dir=state_dir)
    except ProvisionerError as err:
        raise _fail(err) from None
    if not st.up:
        typer.echo(f"lab is down ({st.state_dir})")
        raise typer.Exit(1)
    kind = "private dockerd" if st.private_engine else "engine"
    typer.echo(f"{kind} {st.engine}: {'running' if st.engine_running else 'NOT RUNNING'}")
    typer.echo(f"suite {st.suite}, subnet {st.subnet}, state {st.state_dir}")
    width = max(len(h.name) for h in st.hosts)
    for h in st.hosts:
        typer.echo(f"{h.name:<{width}}  {h.address:<15}  {h.suite:<8}  {h.state}")
    if not all(h.state == "ready" for h in st.hosts):
        raise typer.Exit(1)
