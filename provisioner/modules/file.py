"""``file``: a file with the given content (or local source), mode and owner; or absent."""

from __future__ import annotations

import hashlib
import posixpath
import re
from pathlib import Path
from typing import Literal

from pydantic import ValidationInfo, field_validator, model_validator

from provisioner.connection.base import q
from provisioner.inventory import Inventory
from provisioner.modules.base import (
    Change,
    Module,
    ModuleArgs,
    NoOp,
    Plan,
    PlanContext,
    local_file,
    register,
)
from provisioner.steps import Put, Run

_OWNER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}(:[a-z_][a-z0-9_.-]{0,31})?$")


class FileArgs(ModuleArgs):
    path: str
    content: str | None = None
    # a local file, relative to the playbook's directory; read once when the playbook is loaded
    source: Path | None = None
    state: Literal["present", "absent"] = "present"
    mode: str | None = None  # octal string, e.g. "0644"
    owner: str | None = None  # "user" or "user:group"

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/") or "\x00" in v or "\n" in v:
            raise ValueError("must be an absolute path on the host, e.g. /etc/motd")
        return posixpath.normpath(v)

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not re.fullmatch(r"0?[0-7]{3,4}", str(v)):
            raise ValueError("must be an octal mode as a quoted string, e.g. '0644'")
        return f"{int(str(v), 8):04o}"

    @field_validator("owner")
    @classmethod
    def _owner(cls, v: str | None) -> str | None:
        if v is not None and not _OWNER.fullmatch(v):
            raise ValueError("must be 'user' or 'user:group' with plain POSIX names")
        return v

    @field_validator("source")
    @classmethod
    def _source(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return local_file(v, info)

    @model_validator(mode="after")
    def _one_of(self) -> FileArgs:
        if self.state == "present" and (self.content is None) == (self.source is None):
            raise ValueError("give exactly one of 'content' or 'source' (or state: absent)")
        if self.state == "absent" and (self.content is not None or self.source is not None):
            raise ValueError("state: absent takes no 'content' or 'source'")
        return self

    def data(self) -> bytes:
        if self.source is not None:
            return self.source.read_bytes()
        return (self.content or "").encode()


@register
class FileModule(Module[FileArgs]):
    name = "file"
    Args = FileArgs
    summary = "a file with given content or local source, mode and owner (or absent)"

    def describe(self, args: FileArgs) -> str:
        return f"file {args.path}"

    def watch(self, args: FileArgs, inventory: Inventory) -> list[str]:
        return [args.path]

    def plan(self, ctx: PlanContext, args: FileArgs) -> Plan:
        current = ctx.facts.file(args.path)
        if args.state == "absent":
            if not current.exists:
                return NoOp(f"{args.path} is absent")
            return [
                Change(
                    f"remove {args.path}",
                    path=args.path,
                    before=current.content if current.content is not None else "<binary>",
                    after="",
                    steps=[Run(f"rm -f {q(args.path)}", what=f"could not remove {args.path}")],
                    retry_safe=True,  # rm -f twice is rm -f once
                )
            ]
        data = args.data()
        mode = int(args.mode, 8) if args.mode else (int(current.mode, 8) if current.mode else 0o644)
        owner = args.owner or (current.owner if current.exists else "root:root")
        want_text = data.decode("utf-8", "replace")
        same = current.exists and current.sha256 == hashlib.sha256(data).hexdigest()
        if not same:
            verb = "update" if current.exists else "create"
            return [
                Change(
                    f"{verb} {args.path}",
                    path=args.path,
                    before=(current.content if current.content is not None else "<binary>") if current.exists else None,
                    after=want_text,
                    steps=[Put(args.path, data, mode, owner)],
                    retry_safe=True,  # an atomic write of the same bytes can be repeated
                )
            ]
        cmds: list[str] = []
        if args.mode and current.mode and int(current.mode, 8) != mode:
            cmds.append(f"chmod {mode:o} {q(args.path)}")
        if args.owner and current.owner != _full_owner(args.owner, current.owner):
            cmds.append(f"chown {q(args.owner)} {q(args.path)}")
        if cmds:
            return [
                Change(
                    f"set mode/owner of {args.path}",
                    steps=[Run(c, what=f"could not set the mode/owner of {args.path}") for c in cmds],
                    retry_safe=True,
                )
            ]
        return NoOp(f"{args.path} is up to date")


def _full_owner(want: str, have: str | None) -> str:
    if ":" in want or have is None:
        return want
    return f"{want}:{have.split(':', 1)[1]}" if ":" in have else want
