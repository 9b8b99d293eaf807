"""Playbook loading: plays, tasks, handlers, host patterns and module arguments."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import ValidationInfo, field_validator

from provisioner.errors import InputError
from provisioner.inventory import Inventory, load_inventory
from provisioner.modules.base import Module, ModuleArgs, NoOp, Plan, PlanContext
from provisioner.playbook import Play, load_playbook

INVENTORY = """
hosts:
  kv1: {address: 198.18.0.10, groups: [kv]}
  web1: {address: 198.18.0.11, groups: [docker]}
  web2: {address: 198.18.0.12, groups: [docker]}
  web3: {address: 198.18.0.13, groups: [docker]}
kv_store:
  hosts: [kv1]
"""


class NoteArgs(ModuleArgs):
    text: str
    level: int = 1


class Note(Module[NoteArgs]):
    name = "note"
    Args = NoteArgs
    free_form: ClassVar[str] = "text"

    def plan(self, ctx: PlanContext, args: NoteArgs) -> Plan:
        return NoOp("test module")


class RestartArgs(ModuleArgs):
    service: str = "docker"


class Restart(Module[RestartArgs]):
    name = "restart"
    Args = RestartArgs

    def plan(self, ctx: PlanContext, args: RestartArgs) -> Plan:
        return NoOp("test module")


class CopyArgs(ModuleArgs):
    src: Path
    kv_host: str | None = None

    @field_validator("src")
    @classmethod
    def _src(cls, v: Path, info: ValidationInfo) -> Path:
        base = (info.context or {})["base_dir"]
        p = v if v.is_absolute() else base / v
        if not p.is_file():
            raise ValueError(f"local file {p} does not exist")
        return p

    @field_validator("kv_host")
    @classmethod
    def _kv(cls, v: str | None, info: ValidationInfo) -> str | None:
        inventory: Inventory = (info.context or {})["inventory"]
        if v is not None and v not in inventory.kv_store.hosts:
            raise ValueError(f"{v} is not a key-value store host")
        return v


class Copy(Module[CopyArgs]):
    name = "copy"
    Args = CopyArgs

    def plan(self, ctx: PlanContext, args: CopyArgs) -> Plan:
        return NoOp("test module")


MODULES: dict[str, type[Module[Any]]] = {"note": Note, "restart": Restart, "copy": Copy}


@pytest.fixture
def inventory(tmp_path: Path) -> Inventory:
    path = tmp_path / "inventory.yml"
    path.write_text(INVENTORY)
    return load_inventory(path)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "playbook.yml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


PLAYBOOK = """
# the main job, in short
- name: store
  hosts: kv
  tasks:
    - note: {text: starting the store}

- name: docker hosts
  hosts: [docker, "!web2"]
  serial: 50%
  any_errors_fatal: true
  max_fail_percentage: 25
  tasks:
    - name: write config
      note:
        text: configure
        level: 2
      notify: restart docker
      when: docker.server_version >= "20.10"
    - note: just a string argument
      run_once: true
      notify: [restart docker]
    - restart:
  handlers:
    - name: restart docker
      restart: {service: docker}
"""


def test_full_playbook(tmp_path: Path, inventory: Inventory) -> None:
    path = write(tmp_path, PLAYBOOK)
    book = load_playbook(path, inventory, modules=MODULES)
    assert book.source == path
    store, docker = book.plays
    assert (store.name, store.hosts, store.pattern, store.line) == ("store", ["kv1"], "kv", 2)
    assert store.serial is None and store.any_errors_fatal is False and store.max_fail_percentage is None
    assert docker.hosts == ["web1", "web3"]
    assert docker.pattern == ["docker", "!web2"]
    assert (docker.serial, docker.any_errors_fatal, docker.max_fail_percentage) == ("50%", True, 25)
    t1, t2, t3 = docker.tasks
    assert (t1.name, t1.module, t1.notify, t1.run_once) == ("write config", "note", ["restart docker"], False)
    assert t1.line == 13
    assert t1.args == NoteArgs(text="configure", level=2)
    assert t1.when == 'docker.server_version >= "20.10"'
    cond = t1.condition()
    assert cond is not None and cond.evaluate({"docker": {"server_version": "24.0.7"}})
    assert t2.args == NoteArgs(text="just a string argument")  # free_form
    assert (t2.run_once, t2.notify, t2.condition()) == (True, ["restart docker"], None)
    assert t2.name == "note just a string argument"
    assert t3.args == RestartArgs() and t3.name == "restart" and t3.line == 22
    (handler,) = docker.handlers
    assert (handler.name, handler.module, handler.args) == ("restart docker", "restart", RestartArgs(service="docker"))
    # dumps keep the module's own arguments
    assert book.model_dump()["plays"][1]["tasks"][0]["args"] == {"text": "configure", "level": 2}


def test_default_names_and_play_name(tmp_path: Path, inventory: Inventory) -> None:
    long = "x" * 80
    path = write(tmp_path, f"""
        - hosts: web1,web2
          tasks:
            - note: {{text: hello, level: 3}}
            - note: {{text: {long}}}
        """)
    (play,) = load_playbook(path, inventory, modules=MODULES).plays
    assert play.name == "web1,web2"
    assert play.tasks[0].name == "note text=hello level=3"
    assert play.tasks[1].name == f"note text={'x' * 30}..."


def test_module_args_get_the_playbook_folder_and_inventory(tmp_path: Path, inventory: Inventory) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "motd").write_text("hi")
    path = write(tmp_path, """
        - hosts: all
          tasks:
            - copy: {src: files/motd, kv_host: kv1}
        """)
    (play,) = load_playbook(path, inventory, modules=MODULES).plays
    args = play.tasks[0].args
    assert isinstance(args, CopyArgs)
    assert (args.src, args.kv_host) == (tmp_path / "files" / "motd", "kv1")
    bad = write(tmp_path, """
        - hosts: all
          tasks:
            - copy: {src: files/nope, kv_host: web1}
        """)
    with pytest.raises(InputError) as info:
        load_playbook(bad, inventory, modules=MODULES)
    got = [(p.field, p.line, p.column) for p in info.value.problems]
    assert got == [("[0].tasks[0].copy.src", 3, 19), ("[0].tasks[0].copy.kv_host", 3, 40)]
    assert "files/nope does not exist" in info.value.problems[0].message


def test_empty_tasks_and_null_sections(tmp_path: Path, inventory: Inventory) -> None:
    path = write(tmp_path, """
        - hosts: all
          tasks:
          handlers:
        """)
    (play,) = load_playbook(path, inventory, modules=MODULES).plays
    assert play.tasks == [] and play.handlers == []
    assert play.hosts == ["kv1", "web1", "web2", "web3"]


def test_no_plays_is_an_error(tmp_path: Path, inventory: Inventory) -> None:
    with pytest.raises(InputError, match="no plays"):
        load_playbook(write(tmp_path, "[]\n"), inventory, modules=MODULES)


@pytest.mark.parametrize(
    ("serial", "batches"),
    [
        (None, [["a", "b", "c", "d", "e"]]),
        (1, [["a"], ["b"], ["c"], ["d"], ["e"]]),
        (2, [["a", "b"], ["c", "d"], ["e"]]),
        ("40%", [["a", "b"], ["c", "d"], ["e"]]),
        ("10%", [["a"], ["b"], ["c"], ["d"], ["e"]]),  # at least one host per batch
        ("100%", [["a", "b", "c", "d", "e"]]),
    ],
)
def test_batches(serial: int | str | None, batches: list[list[str]]) -> None:
    play = Play(name="p", hosts=["a", "b", "c", "d", "e"], pattern="all", serial=serial)
    assert play.batches() == batches
    assert play.batches([]) == []


def test_serial_forms(tmp_path: Path, inventory: Inventory) -> None:
    for written, expected in (("3", 3), ("'2'", 2), ("'25%'", "25%"), ("12.5%", "12.5%")):
        path = write(tmp_path, f"""
            - hosts: all
              serial: {written}
            """)
        (play,) = load_playbook(path, inventory, modules=MODULES).plays
        assert play.serial == expected


def test_real_modules_validate_their_arguments(tmp_path: Path, inventory: Inventory) -> None:
    """With the built-in registry (file, command): mode 0644 unquoted stays octal text."""
    path = write(tmp_path, """
        - hosts: docker
          tasks:
            - file: {path: /etc/motd, content: "hello\\n", mode: 0644}
            - command: {cmd: "true", creates: /etc/motd}
        """)
    (play,) = load_playbook(path, inventory).plays
    assert [t.module for t in play.tasks] == ["file", "command"]
    assert getattr(play.tasks[0].args, "mode") == "0644"  # noqa: B009
    bad = write(tmp_path, """
        - hosts: docker
          tasks:
            - file: {path: etc/motd, content: x}
            - comand: {cmd: "true"}
        """)
    with pytest.raises(InputError) as info:
        load_playbook(bad, inventory)
    fields = [p.field for p in info.value.problems]
    assert fields == ["[0].tasks[0].file.path", "[0].tasks[1].comand"]
    assert "did you mean 'command'" in info.value.problems[1].fix


def test_the_overlay_job_validates_on_an_inventory_without_a_store(tmp_path: Path) -> None:
    from provisioner.inventory import load_inventory
    from provisioner.playbook import load_playbook

    inv_path = tmp_path / "inv.yml"
    inv_path.write_text(
        "hosts:\n  h1: {address: 198.18.0.11, groups: [docker]}\n"
        "networks:\n  net1: {driver: bridge, subnet: 198.19.2.0/24}\n"
    )
    inv = load_inventory(inv_path)
    pb = load_playbook(Path(__file__).resolve().parents[2] / "playbooks" / "overlay.yml", inv)
    assert pb.plays[0].hosts == []  # the store's play has nobody to run on
    assert pb.plays[1].hosts == ["h1"]
