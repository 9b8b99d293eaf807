"""Secrets never reach output: inventory passwords/passphrases and Change.secrets (join tokens and the like)
are looked for in every rendering a run produces: live display, recap, JSON, JUnit, and the CLI's own
stdout/stderr."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from provisioner import report as render
from provisioner.connection.base import ShellConnection
from provisioner.connection.fake import FakeConnection, serve_facts
from provisioner.engine import Executor
from provisioner.engine.executor import apply_change
from provisioner.errors import TaskError
from provisioner.inventory import Inventory, load_inventory
from provisioner.modules import base as modules_base
from provisioner.modules.base import ApplyContext, Change, Module, ModuleArgs, Plan, PlanContext
from provisioner.playbook import load_playbook
from provisioner.steps import Call, StepState

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "pw-Sup3r-s3cret-7731"
PASSPHRASE = "pp-K3y-phrase-9913"
TOKEN = "SWMTKN-1-0123456789abcdefghijklmnopqrstuvwxyz-zyxwvutsrqponm"
SECRETS = (PASSWORD, PASSPHRASE, TOKEN)


class JoinArgs(ModuleArgs):
    fail: bool = False


class JoinModule(Module[JoinArgs]):
    """Like a swarm join: the token is in the command, the file written and the error of a failure."""

    name = "test_secret_join"
    Args = JoinArgs

    def plan(self, ctx: PlanContext, args: JoinArgs) -> Plan:
        def apply(actx: ApplyContext, _state: StepState) -> None:
            actx.log(f"joining with token {TOKEN} (password {PASSWORD})")
            cmd = f"docker swarm join --token {TOKEN} 198.18.0.10:2377"
            if args.fail:
                actx.conn.check(cmd, what=f"join failed for {TOKEN}")
                raise TaskError(f"join refused: token {TOKEN} rejected", fix=f"check {TOKEN}")

        return [
            Change(
                f"join the swarm with {TOKEN}",
                path="/etc/provisioner/join-token",
                before=None,
                after=f"token={TOKEN}\npassword={PASSWORD}\n",
                steps=[Call(f"docker swarm join --token {TOKEN} 198.18.0.10:2377", apply)],
                notes=[f"the token {TOKEN} is single-use"],
                secrets=(TOKEN,),
            )
        ]


@pytest.fixture()
def join_module() -> Iterator[None]:
    modules_base.register(JoinModule)
    try:
        yield
    finally:
        modules_base._REGISTRY.pop(JoinModule.name, None)


def write_inventory(tmp_path: Path, address: str = "198.18.0.10", port: int = 22) -> Path:
    key = tmp_path / "key"
    key.write_text("not a key\n")
    path = tmp_path / "inventory.yml"
    path.write_text(
        f"connection:\n  private_key: {key}\n  known_hosts: {tmp_path / 'kh'}\n  host_key_policy: accept-new\n"
        f"  password: {PASSWORD}\n  key_passphrase: {PASSPHRASE}\n  retries: 0\n  connect_timeout: 2\n"
        f"hosts:\n  h1: {{address: {address}, port: {port}, groups: [web], password: {PASSWORD}x}}\n"
        "kv_store:\n  hosts: [h1]\n"
    )
    return path


def assert_clean(text: str, where: str) -> None:
    for secret in (*SECRETS, PASSWORD + "x"):
        assert secret not in text, f"{where} shows a secret: ...{text[max(0, text.find(secret) - 200) :][:400]}"


@pytest.mark.parametrize("fail", [False, True])
def test_every_rendering_of_a_run_hides_secrets(tmp_path: Path, join_module: None, fail: bool) -> None:
    inv: Inventory = load_inventory(write_inventory(tmp_path))

    def connect(host: str) -> ShellConnection:
        # the failing command echoes what it was given, as real tools do
        conn = FakeConnection(host).on("swarm join", rc=1, stderr=f"error: invalid join token {TOKEN}")
        return serve_facts(conn)

    pb = tmp_path / "play.yml"
    pb.write_text(f"- name: join\n  hosts: web\n  tasks:\n    - test_secret_join: {{fail: {str(fail).lower()}}}\n")
    live = io.StringIO()
    events = render.LiveEvents(Console(file=live, width=300), show_diff=True, verbose=True)
    for check in (True, False):
        report = Executor(inv, connect, check=check, events=events).run(load_playbook(pb, inv))
        assert report.ok is (not fail or check)
        out = io.StringIO()
        render.recap(Console(file=out, width=300), report)
        junit = tmp_path / f"junit-{check}.xml"
        render.write_junit(report, junit)
        assert_clean(out.getvalue(), "recap")
        assert_clean(render.to_json(report), "JSON")
        assert_clean(junit.read_text(), "JUnit")
    assert_clean(live.getvalue(), "live output")
    # the renderings did run: the redacted token and the failure are there
    assert "join the swarm with ***" in live.getvalue()
    if fail:
        assert "invalid join token ***" in render.to_json(report)


def test_cli_output_hides_inventory_secrets(tmp_path: Path) -> None:
    # a closed port on loopback: the run fails to connect, with the password and passphrase in play
    inventory = write_inventory(tmp_path, "127.0.0.1", 1)
    pb = tmp_path / "play.yml"
    pb.write_text("- name: p\n  hosts: web\n  tasks:\n    - command: {cmd: 'true'}\n")
    junit = tmp_path / "junit.xml"
    runs = [
        ["validate", "-i", str(inventory), str(pb)],
        ["facts", "-i", str(inventory)],
        ["plan", "-i", str(inventory), str(pb), "--output", "json", "--junit", str(junit)],
        ["apply", "-i", str(inventory), str(pb), "--junit", str(junit), "--lock-timeout", "0"],
        ["apply", "-i", str(inventory), str(pb), "--output", "json"],
    ]
    for args in runs:
        res = subprocess.run(
            [sys.executable, "-m", "provisioner", *args], capture_output=True, text=True, cwd=ROOT, timeout=60
        )
        assert_clean(res.stdout + res.stderr, " ".join(args[:1]))
        if args[0] != "validate":
            assert res.returncode == 1, res.stdout + res.stderr
            if args[0] != "facts":  # (facts prints a table without the reason)
                assert "127.0.0.1" in res.stdout + res.stderr  # it did try, and said where
        if junit.exists():
            assert_clean(junit.read_text(), "JUnit")


@pytest.mark.parametrize("fault", ["refused", "lost"])
def test_swarm_join_token_read_at_apply_time_is_masked_in_its_errors(tmp_path: Path, fault: str) -> None:
    from provisioner.connection.base import RunResult
    from provisioner.errors import ConnectError, ProvisionerError
    from provisioner.facts import HostFacts
    from provisioner.modules import swarm

    def join(cmd: str, _stdin: bytes | None) -> RunResult:
        if fault == "lost":
            raise ConnectError("h1", f"SSH connection to 198.18.0.10:22 lost before: {cmd}")
        return RunResult(1, "", f"Error response from daemon: invalid join token {TOKEN}")

    conn = FakeConnection("h1").on("join-token -q worker", stdout=f"{TOKEN}\n").on("swarm join --token", respond=join)
    inv = load_inventory(write_inventory(tmp_path))
    ctx = ApplyContext(host="h1", conn=conn, facts=HostFacts(host="h1"), inventory=inv)
    with pytest.raises(ProvisionerError) as err:
        apply_change(ctx, Change("join", steps=swarm.join_steps("h1", "h0", "198.18.0.11", "198.18.0.10:2377")))
    assert isinstance(err.value, ConnectError) is (fault == "lost")  # still unreachable, not failed
    assert TOKEN not in str(err.value) and "--token ***" in str(err.value)


def test_a_checks_structured_result_is_masked_like_its_message() -> None:
    from provisioner.connection.fake import FakeConnection
    from provisioner.engine import Executor
    from provisioner.engine.results import TaskResult
    from tests.builders import inventory

    inv = inventory(connection={"password": PASSWORD})
    ex = Executor(inv, lambda h: FakeConnection(h), check=False)
    data = {"pairs": [{"cause": f"ssh -p {PASSWORD}", PASSWORD: [PASSWORD, 3]}]}
    ex._record(TaskResult("p", "t", "container_verify", "lab2", "failed", f"x {PASSWORD}", data=data))
    recorded = ex.report.hosts["lab2"].results[0]
    assert PASSWORD not in str(recorded.data) and PASSWORD not in recorded.message
    assert recorded.data == {"pairs": [{"cause": "ssh -p ***", "***": ["***", 3]}]}
    ex.close()
