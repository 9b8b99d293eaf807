"""``docker_image``: an image present on the host, pulled from a registry or loaded from a `docker save` archive.

An archive's image id is computed here from its manifest and config (no local Docker needed), so a host
that already has that id is skipped without uploading anything. Otherwise the archive is streamed over
the host's one connection into a temp file, its sha256 checked on the host, loaded, tagged and removed,
all in one command.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import ValidationInfo, field_validator, model_validator

from provisioner.connection.base import q
from provisioner.errors import TaskError
from provisioner.inventory import Inventory
from provisioner.modules._docker import ArchiveInfo, archive_info, normalize_ref, short_id
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
from provisioner.modules.capabilities import overlay_mode
from provisioner.steps import Run

# exit code of the upload command when the checksum on the host does not match
_CHECKSUM_RC = 65


class DockerImageArgs(ModuleArgs):
    # the image reference to have on the host (pulled unless `archive` is given)
    image: str | None = None
    # a local `docker save` archive holding the image (relative paths: the playbook's folder)
    archive: Path | None = None
    # take image and archive from the inventory: kv_store (the store image) or verify (the probe image)
    from_inventory: Literal["kv_store", "verify"] | None = None

    @field_validator("image")
    @classmethod
    def _ref(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or any(c.isspace() for c in v) or v.startswith("-")):
            raise ValueError("must be an image reference such as busybox:1.36 or registry.example.com/app:1")
        return v

    @field_validator("archive")
    @classmethod
    def _archive(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return local_file(v, info)

    @model_validator(mode="after")
    def _one_source(self) -> DockerImageArgs:
        if (self.image is None) == (self.from_inventory is None):
            raise ValueError("give either 'image' (and optionally 'archive') or 'from_inventory: kv_store|verify'")
        if self.from_inventory is not None and self.archive is not None:
            raise ValueError("'archive' comes from the inventory with from_inventory; remove it here")
        return self

    def resolve(self, inventory: Inventory) -> tuple[str, Path | None]:
        if self.from_inventory == "kv_store":
            return inventory.store().image, inventory.store().image_archive
        if self.from_inventory == "verify":
            return inventory.verify.image, inventory.verify.image_archive
        assert self.image is not None
        return self.image, self.archive


@register
class DockerImageModule(Module[DockerImageArgs]):
    name = "docker_image"
    Args = DockerImageArgs
    summary = "an image present on the host: pulled, or uploaded from a `docker save` archive (checksummed)"

    def describe(self, args: DockerImageArgs) -> str:
        return f"docker_image {args.image or f'{args.from_inventory} image'}"

    def plan(self, ctx: PlanContext, args: DockerImageArgs) -> Plan:
        if args.from_inventory == "kv_store":
            if ctx.inventory.kv_store is None:
                return NoOp("the inventory has no kv_store, so no store image")
            choice = overlay_mode(ctx.inventory, {**ctx.all_facts, ctx.host: ctx.facts})
            if choice.mode == "swarm":
                return NoOp(f"{choice.label()}: no key-value store, so no store image")
        image, archive = args.resolve(ctx.inventory)
        d = ctx.facts.docker
        if not d.active:
            raise TaskError(
                f"{ctx.host}: Docker is not running ({d.state}); cannot check or load image {image}",
                fix=f"install and start Docker on {ctx.host} (apt-get install docker.io)",
            )
        found = image_change(d.images, image, archive)
        return found if isinstance(found, NoOp) else [found]


def image_change(images: Mapping[str, str], image: str, archive: Path | None) -> Change | NoOp:
    """What gets ``image`` onto a host that has ``images`` (ref -> id): nothing, a pull, a tag of the
    archive's image already loaded, or the archive uploaded and loaded."""
    ref = normalize_ref(image)
    have = images.get(ref)
    if archive is None:
        if have:
            return NoOp(f"{ref} is present ({short_id(have)})")
        pull = Run(
            f"docker pull {q(ref)}",
            timeout=900,
            progress=f"pulling {ref}",
            what=f"could not pull {ref}",
            fix="check that the host reaches the registry, or give an image_archive (docker save) in the inventory",
        )
        return Change(f"pull {ref}", steps=[pull])
    info = archive_info(archive)
    if have == info.image_id:
        return NoOp(f"{ref} is present with the archive's image id ({short_id(info.image_id)})")
    if info.image_id in images.values():
        cmd = f"docker tag {q(info.image_id)} {q(ref)}"
        return Change(
            f"tag {short_id(info.image_id)} as {ref} (the archive's image is already loaded)",
            steps=[Run(cmd, what="could not tag the image")],
        )
    notes = [f"uploads {info.size / 1e6:.1f} MB over SSH"]
    if have:
        notes.append(f"{ref} is now {short_id(have)}; it becomes {short_id(info.image_id)}")
    return Change(
        f"load {ref} from {archive.name} ({short_id(info.image_id)})",
        steps=[load_step(info, ref)],
        notes=notes,
    )


def load_step(info: ArchiveInfo, ref: str) -> Run:
    """The archive streamed from its file over the host's connection (hosts uploading in parallel each
    hold one packet, not the archive) into the load command."""
    return Run(
        load_command(info, ref),
        stdin=info.path,
        timeout=900,
        progress=f"uploading {info.path.name} ({info.size / 1e6:.1f} MB)",
        what=f"could not load {info.path.name} into Docker",
        fix="check free space in /var/tmp and /var/lib/docker on the host (df -h)",
        known=(
            (
                _CHECKSUM_RC,
                f"the uploaded {info.path.name} does not match its sha256 {info.sha256}; nothing was loaded",
                "run again; if it repeats, check free space in /var/tmp on the host and the network path",
            ),
        ),
    )


def load_command(info: ArchiveInfo, ref: str) -> str:
    """One command: stdin -> temp file, checksum verified, loaded, tagged; the temp file always removed."""
    return (
        "set -e; t=$(mktemp /var/tmp/provisioner-image.XXXXXX); trap 'rm -f \"$t\"' EXIT; "
        'cat > "$t"; '
        f'echo "{info.sha256}  $t" | sha256sum -c --status - '
        f'|| {{ echo "checksum mismatch: the upload arrived corrupted" >&2; exit {_CHECKSUM_RC}; }}; '
        'docker load -i "$t"; '
        f"docker tag {q(info.image_id)} {q(ref)}"
    )
