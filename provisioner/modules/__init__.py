"""Built-in modules. Importing this package registers them."""

from provisioner.modules import command, file  # noqa: F401
from provisioner.modules.base import Change, Module, ModuleArgs, NoOp, PlanContext, register, registry

__all__ = ["Change", "Module", "ModuleArgs", "NoOp", "PlanContext", "register", "registry"]
