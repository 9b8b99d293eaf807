"""``command``: run a shell command, made idempotent with ``creates`` / ``unless`` guards."""

from __future__ import annotations

import hashlib

from pydantic import field_validator

from provisioner.connection.base import q
from provisioner.modules.base import Change, Module, ModuleArgs, NoOp, Plan, PlanContext, register
from provisioner.steps import Run


class CommandArgs(ModuleArgs):
    cmd: str
    # skip when this path exists on the host
    creates: str | None = None
    # skip when this shell command exits 0 on the host (checked with the facts, in the same round trip)
    unless: str | None = None
    # run as root (via sudo for non-root users); false runs as the connecting user
    become: bool = True
    timeout: float | None = None

    @field_validator("cmd")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must be a non-empty shell command")
        return v

    @field_validator("creates")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError("must be an absolute path on the host")
        return v


@register
class CommandModule(Module[CommandArgs]):
    name = "command"
    Args = CommandArgs
    summary = "run a shell command; `creates`/`unless` make it idempotent"

    def describe(self, args: CommandArgs) -> str:
        first = args.cmd.strip().splitlines()[0]
        return f"command {first[:50]}"

    def probes(self, args: CommandArgs) -> dict[str, str]:
        out: dict[str, str] = {}
        if args.creates:
            out[_key("creates", args.creates)] = f"test -e {q(args.creates)}"
        if args.unless:
            out[_key("unless", args.unless)] = args.unless
        return out

    def plan(self, ctx: PlanContext, args: CommandArgs) -> Plan:
        if args.creates and ctx.facts.probes.get(_key("creates", args.creates)) == 0:
            return NoOp(f"{args.creates} exists")
        if args.unless and ctx.facts.probes.get(_key("unless", args.unless)) == 0:
            return NoOp(f"`{args.unless}` succeeded")
        step = Run(args.cmd, sudo=args.become, timeout=args.timeout, what="command failed")
        return [Change(f"run {args.cmd.strip().splitlines()[0][:60]}", steps=[step])]


def _key(kind: str, value: str) -> str:
    # probe names travel in the facts script's section markers: keep them one short token
    return f"{kind}-{hashlib.sha256(value.encode()).hexdigest()[:16]}"
