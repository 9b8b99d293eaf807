"""Load YAML into plain Python data and remember where every key and item was written.

``load_yaml`` returns a :class:`YamlDoc`: the data (dicts, lists, str, int, float, bool, None) plus the
1-based line and column of every mapping key, mapping value and list item, addressed by a path such as
``("hosts", "host1", "address")`` or ``(0, "tasks", 2, "file", "mode")`` (ints and digit strings both
work for list indexes). Anything wrong with the file itself (missing, unreadable, not UTF-8, YAML syntax,
duplicate keys, empty) raises :class:`~provisioner.errors.InputError` pointing at file:line:col.

:func:`problems_from_validation` turns a pydantic ``ValidationError`` into located
:class:`~provisioner.errors.Problem` objects with a fix hint each.
"""

from __future__ import annotations

import datetime
import difflib
import io
import types
import typing
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.scalarint import ScalarInt

from provisioner.errors import InputError, Problem

PathPart = str | int
Where = tuple[int | None, int | None]

# pydantic loc entries that name a dict key rather than a value
_KEY_MARK = "[key]"


@dataclass
class YamlDoc:
    """Parsed YAML with the source position of every key, value and list item."""

    path: Path
    data: Any
    # path -> (line, col), 1-based; "key" is where a mapping key is written, "value" where its value starts
    keys: dict[tuple[str, ...], tuple[int, int]] = field(default_factory=dict)
    values: dict[tuple[str, ...], tuple[int, int]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.path)

    def where(self, path: Sequence[PathPart], prefer: Literal["key", "value"] = "value") -> Where:
        """Line/column of ``path``, or of its nearest ancestor that has one."""
        parts = tuple(str(p) for p in path)
        first, second = (self.keys, self.values) if prefer == "key" else (self.values, self.keys)
        for n in range(len(parts), -1, -1):
            sub = parts[:n]
            for table in (first, second):
                if sub in table:
                    return table[sub]
        return (None, None)

    def get(self, path: Sequence[PathPart]) -> Any:
        """The data at ``path``, or None when the path does not exist."""
        node: Any = self.data
        for part in path:
            if isinstance(node, dict) and str(part) in node:
                node = node[str(part)]
            elif isinstance(node, list) and str(part).isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return None
        return node

    def problem(
        self,
        path: Sequence[PathPart],
        message: str,
        fix: str,
        prefer: Literal["key", "value"] = "value",
    ) -> Problem:
        line, col = self.where(path, prefer)
        return Problem(self.name, line, col, dotted(path), message, fix)


def dotted(path: Sequence[PathPart]) -> str:
    """("hosts", "host1", "address") -> "hosts.host1.address"; (0, "tasks", 2) -> "[0].tasks[2]"."""
    out = ""
    for part in path:
        if isinstance(part, int) or (isinstance(part, str) and part.isdigit()):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def load_yaml(path: Path | str, what: str) -> YamlDoc:
    """Read and parse one YAML document. ``what`` ("inventory", "playbook") words the messages."""
    p = Path(path)
    name = str(p)
    try:
        raw = p.read_bytes()
    except FileNotFoundError as exc:
        raise _one(name, None, None, f"{what} file not found", f"check the path; looked for {p.absolute()}") from exc
    except IsADirectoryError as exc:
        raise _one(name, None, None, f"{what} path is a directory, not a file",
                   f"give the path of the {what} YAML file") from exc
    except PermissionError as exc:
        raise _one(name, None, None, f"cannot read the {what} file: permission denied",
                   f"make it readable for this user (e.g. chmod u+r {name})") from exc
    except OSError as exc:
        raise _one(name, None, None, f"cannot read the {what} file: {exc.strerror or exc}",
                   "check the path and the file system") from exc

    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise _one(name, line, col, f"{what} file is not valid UTF-8 (byte 0x{raw[exc.start]:02x})",
                   "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from exc

    if not text.strip() or all(not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()):
        raise _one(name, 1, 1, f"{what} file is empty", _EMPTY_FIX.get(what, f"write the {what} as YAML"))

    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. a reused anchor: legal YAML, the later one wins
            node = yaml.load(io.StringIO(text))
    except DuplicateKeyError as exc:
        key = _duplicate_key_name(exc)
        first = exc.context_mark.line + 1 if exc.context_mark is not None else None
        mark = exc.problem_mark
        at: Where = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        where_first = f"; the mapping starting at line {first} already has it" if first else ""
        raise _one(name, *at, f"duplicate key {key}{where_first}",
                   "every key may appear once per mapping: remove or rename one of them") from exc
    except MarkedYAMLError as exc:
        raise _syntax_problem(name, text, exc) from exc
    except YAMLError as exc:
        raise _one(name, None, None, f"YAML error: {exc}", "fix the YAML syntax") from exc
    except (TypeError, ValueError, RecursionError) as exc:
        # the parser itself trips over e.g. a mapping used as a key ('? {a: 1}: x')
        raise _one(name, None, None, f"unsupported YAML construct ({exc})",
                   "use plain text as keys and avoid '?' complex keys and recursive aliases") from exc

    doc = YamlDoc(p, None)
    lc = getattr(node, "lc", None)
    doc.values[()] = doc.keys[()] = (lc.line + 1, lc.col + 1) if lc is not None else (1, 1)
    doc.data = _plain(node, (), doc)
    if doc.data is None:
        raise _one(name, 1, 1, f"{what} file has no content (only null)",
                   _EMPTY_FIX.get(what, f"write the {what} as YAML"))
    return doc


_EMPTY_FIX = {
    "inventory": "start from inventories/example.yml; an inventory needs at least 'hosts:'",
    "playbook": "a playbook is a list of plays, e.g. '- hosts: all' followed by 'tasks:'",
}

_TYPE_NAMES = {
    dict: "a mapping (key: value)",
    list: "a list",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true/false",
    type(None): "nothing (null)",
}


def describe_type(value: Any) -> str:
    for t, text in _TYPE_NAMES.items():
        if type(value) is t:
            return text
    return type(value).__name__


def require_type(doc: YamlDoc, expected: type, what: str, example: str) -> None:
    """Raise InputError unless the document's top level is of type ``expected``."""
    if not isinstance(doc.data, expected):
        raise InputError([Problem(doc.name, 1, 1, "", f"the {what} must be {describe_type(expected())}, "
                                  f"but the file holds {describe_type(doc.data)}", f"write it as {example}")])


def _one(file: str, line: int | None, col: int | None, message: str, fix: str) -> InputError:
    return InputError([Problem(file, line, col, "", message, fix)])


def _duplicate_key_name(exc: DuplicateKeyError) -> str:
    text = str(exc.problem or "")
    # ruamel words it: found duplicate key "host1" with value ... (original value: ...)
    start = text.find('"')
    end = text.find('"', start + 1)
    return repr(text[start + 1 : end]) if 0 <= start < end else "(unnamed)"


def _syntax_problem(file: str, text: str, exc: MarkedYAMLError) -> InputError:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
    problem = (exc.problem or exc.context or "invalid YAML").strip()
    lines = text.splitlines()
    src = lines[line - 1] if line is not None and 0 < line <= len(lines) else ""
    fix = "check indentation, colons and quotes around this spot"
    if "\t" in problem or "'\\t'" in problem or ("\t" in src[: (col or 1)] and src[: (col or 1)].strip() == ""):
        problem = "tab character used for indentation"
        fix = "YAML indentation must use spaces, never tabs: replace the tab(s) on this line with spaces"
    elif "mapping values are not allowed" in problem:
        fix = ("a value containing ': ' must be quoted, or a key is indented wrongly: "
               "quote the value or fix the indentation")
    elif "expected a single document" in (exc.context or "") + problem:
        problem = "more than one YAML document ('---') in the file"
        fix = "keep one document per file: remove the extra '---' separator"
    elif "could not find expected ':'" in problem:
        fix = "each key needs a ':' after it; check the line above as well"
    elif "found undefined alias" in problem:
        fix = "define the anchor (&name) before using the alias (*name)"
    elif "while scanning a quoted scalar" in (exc.context or ""):
        problem = "unterminated quoted string"
        fix = "close the quote that starts here"
    elif "expected <block end>" in problem or "expected <document start>" in problem:
        fix = "an item is indented less or more than its siblings; align it with the lines above"
    if exc.context and exc.context_mark is not None and exc.context_mark is not mark:
        problem += f" ({exc.context} at line {exc.context_mark.line + 1})"
    return _one(file, line, col, f"YAML syntax error: {problem}", fix)


def _plain(node: Any, path: tuple[str, ...], doc: YamlDoc, active: frozenset[int] = frozenset()) -> Any:
    """Convert ruamel's round-trip types to plain Python, recording positions on the way."""
    _check_tag(node, path, doc)
    if isinstance(node, (CommentedMap, CommentedSeq)):
        if id(node) in active:
            raise InputError([doc.problem(path, "an alias refers to the mapping or list that contains it",
                                          "replace the recursive alias (*name) with the values it should hold")])
        active = active | {id(node)}
        here = (node.lc.line + 1, node.lc.col + 1)
    if isinstance(node, CommentedMap):
        out: dict[Any, Any] = {}
        for key in node:
            value = node[key]
            skey = key if isinstance(key, str) else _plain_scalar(key)
            if not isinstance(skey, (str, int, float, bool, type(None))):
                kline, kcol = _position(node.lc.key, key) or here
                raise InputError([Problem(doc.name, kline, kcol, dotted(path),
                                          "unsupported YAML construct: a mapping or list used as a key",
                                          "use plain text as keys and avoid '?' complex keys")])
            sub = (*path, str(skey))
            # keys pulled in by a merge (<<: *defaults) have no position of their own here
            kpos = _position(node.lc.key, key) or here
            doc.keys[sub] = kpos
            doc.values[sub] = _position(node.lc.value, key) or kpos
            out[skey] = _plain(value, sub, doc, active)
        return out
    if isinstance(node, CommentedSeq):
        items: list[Any] = []
        for i, value in enumerate(node):
            sub = (*path, str(i))
            doc.values[sub] = doc.keys[sub] = _position(node.lc.item, i) or here
            items.append(_plain(value, sub, doc, active))
        return items
    return _plain_scalar(node)


def _position(lookup: Any, key: Any) -> tuple[int, int] | None:
    try:
        line, col = lookup(key)
    except (KeyError, TypeError, IndexError):
        return None
    return (line + 1, col + 1)


def _check_tag(node: Any, path: tuple[str, ...], doc: YamlDoc) -> None:
    tag = getattr(getattr(node, "tag", None), "value", None)
    if isinstance(tag, str) and tag.startswith("!"):
        raise InputError([doc.problem(path, f"unsupported YAML tag '{tag}'",
                                      "remove the tag; plain values need none (quote text if needed)")])


def _plain_scalar(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, ScalarInt):
        width = getattr(value, "_width", None)
        if type(value) is ScalarInt and width and len(str(int(value))) < width:
            # 0644: YAML 1.2 reads it as decimal 644; keep what was written so modes stay octal text
            return f"{int(value):0{width}d}"
        return int(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, TaggedScalar):  # a standard tag such as !!str: the value is its text
        return str(value.value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, datetime.date):
        # dates are not a type anything here takes; keep the text so the error shows what was written
        return value.isoformat()
    if isinstance(value, (tuple, list)):
        return [_plain_scalar(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain_scalar(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------------------------------
# pydantic ValidationError -> Problems


def invalid(message: str, fix: str, at: Sequence[PathPart] = ()) -> Exception:
    """An error for validators: ``message`` and ``fix`` survive into the Problem; ``at`` is a sub-path
    (relative to the validated field) that the error really points at."""
    from pydantic_core import PydanticCustomError

    return PydanticCustomError("invalid", message.replace("{", "{{").replace("}", "}}"),
                               {"fix": fix, "at": tuple(str(a) for a in at)})


def many_invalid(problems: Iterable[tuple[Sequence[PathPart], str, str]]) -> Exception:
    """Several located errors from one validator: (sub-path, message, fix) each."""
    from pydantic_core import PydanticCustomError

    items = [(tuple(str(a) for a in at), msg, fix) for at, msg, fix in problems]
    return PydanticCustomError("invalid_many", "{count} problems", {"count": len(items), "problems": items})


def problems_from_validation(
    doc: YamlDoc,
    exc: ValidationError,
    model: type[BaseModel] | None,
    prefix: Sequence[PathPart] = (),
    data: Any = None,
) -> list[Problem]:
    """Translate every error of ``exc`` (raised validating ``doc`` data at ``prefix`` against ``model``)."""
    base = tuple(str(p) for p in prefix)
    root_data = doc.get(base) if data is None else data
    problems: list[Problem] = []
    seen: set[tuple[str, str]] = set()
    for err in exc.errors(include_url=False):
        for path, on_key, message, fix in _explain(err, root_data, model, base):
            full = (*base, *path)
            line, col = doc.where(full, "key" if on_key else "value")
            p = Problem(doc.name, line, col, dotted(full), message, fix)
            if (p.field, p.message) not in seen:
                seen.add((p.field, p.message))
                problems.append(p)
    problems.sort(key=lambda p: (p.line or 0, p.column or 0))
    return problems


def _clean_loc(loc: Sequence[Any], data: Any, keep_last: bool) -> tuple[list[str], bool]:
    """Keep loc parts that exist in the data (drop pydantic's union/validator tags)."""
    out: list[str] = []
    on_key = False
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if part == _KEY_MARK:
            on_key = True
            continue
        s = str(part)
        if isinstance(node, dict) and any(str(k) == s for k in node):
            node = next(v for k, v in node.items() if str(k) == s)
            out.append(s)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            out.append(s)
        elif last and keep_last:
            out.append(s)
        else:
            node = None
    return out, on_key


def _explain(
    err: Any, data: Any, model: type[BaseModel] | None, base: tuple[str, ...] = ()
) -> list[tuple[list[str], bool, str, str]]:
    etype: str = err["type"]
    ctx: dict[str, Any] = err.get("ctx") or {}
    loc = err["loc"]
    value = err.get("input")
    path, on_key = _clean_loc(loc, data, keep_last=etype in ("missing", "extra_forbidden"))
    got = describe_type(value)
    if path and any(s in path[-1].lower() for s in ("password", "passphrase", "secret", "token")):
        value = "***"
    if etype == "invalid_many":
        return [([*path, *at], False, msg, fix) for at, msg, fix in ctx["problems"]]
    if etype == "invalid":
        return [([*path, *ctx.get("at", ())], on_key, err["msg"], ctx.get("fix", ""))]

    owner = _model_at(model, path[:-1]) if path else None
    last = path[-1] if path else ""
    if etype == "extra_forbidden":
        allowed = _field_names(owner)
        fix = f"allowed keys here: {', '.join(allowed)}" if allowed else "remove it"
        close = difflib.get_close_matches(last, allowed, n=1, cutoff=0.6)
        fix = f"did you mean '{close[0]}'? ({fix})" if close else f"remove it or fix its spelling ({fix})"
        return [(path, True, f"unknown key '{last}'", fix)]
    if etype == "missing":
        parent = path[:-1]
        return [(parent, True, f"missing required key '{last}'",
                 f"add '{last}: ...' under {dotted((*base, *parent)) or 'the top level'}")]
    if etype in ("literal_error", "enum"):
        expected = str(ctx.get("expected", ""))
        options = [o.strip().strip("'\"") for o in expected.replace(" or ", ", ").split(",") if o.strip()]
        fix = f"use one of: {', '.join(options)}"
        close = difflib.get_close_matches(str(value), options, n=1, cutoff=0.5)
        if close:
            fix = f"did you mean '{close[0]}'? ({fix})"
        return [(path, on_key, f"{value!r} is not allowed", fix)]
    message = _MESSAGES.get(etype)
    if message is not None:
        text, fix = message
        mapping = {**{k: _num(v) for k, v in ctx.items()}, "got": got, "value": repr(value)}
        return [(path, on_key, text.format_map(_Default(mapping)), fix.format_map(_Default(mapping)))]
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if msg.startswith("Assertion failed, "):
        msg = msg[len("Assertion failed, "):]
    return [(path, on_key, msg, ctx.get("fix") or "correct this value (see inventories/example.yml for the format)")]


def _num(v: Any) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


class _Default(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "?"


_MESSAGES: dict[str, tuple[str, str]] = {
    "dict_type": ("expected a mapping (key: value lines), got {got}", "write it as indented 'key: value' lines"),
    "model_type": ("expected a mapping (key: value lines), got {got}", "write it as indented 'key: value' lines"),
    "model_attributes_type": ("expected a mapping (key: value lines), got {got}",
                              "write it as indented 'key: value' lines"),
    "list_type": ("expected a list, got {got}", "write it as a list, e.g. [a, b] or '- a' lines"),
    "string_type": ("expected text, got {got} {value}", "quote the value, e.g. \"...\""),
    "int_type": ("expected a whole number, got {got} {value}", "write a whole number without quotes"),
    "int_parsing": ("expected a whole number, got {value}", "write a whole number without quotes"),
    "int_from_float": ("expected a whole number, got {value}", "drop the fractional part"),
    "float_type": ("expected a number, got {got} {value}", "write a number without quotes"),
    "float_parsing": ("expected a number, got {value}", "write a number without quotes"),
    "bool_type": ("expected true or false, got {got} {value}", "write true or false"),
    "bool_parsing": ("expected true or false, got {value}", "write true or false"),
    "greater_than": ("must be greater than {gt}, got {value}", "use a value greater than {gt}"),
    "greater_than_equal": ("must be at least {ge}, got {value}", "use a value of {ge} or more"),
    "less_than": ("must be less than {lt}, got {value}", "use a value less than {lt}"),
    "less_than_equal": ("must be at most {le}, got {value}", "use a value of {le} or less"),
    "too_short": ("needs at least {min_length} item(s), got {actual_length}", "add the missing item(s)"),
    "too_long": ("allows at most {max_length} item(s), got {actual_length}", "remove items"),
    "string_too_short": ("must not be empty", "write a value"),
    "string_too_long": ("is too long (at most {max_length} characters)", "shorten it"),
    "none_required": ("must be empty (null)", "remove the value"),
    "path_type": ("expected a file path, got {got} {value}", "write a path as text"),
    "ip_any_address": ("{value} is not a valid IPv4 or IPv6 address",
                       "write an address like 192.0.2.10 or 2001:db8::1"),
    "ip_v4_address": ("{value} is not a valid IPv4 address", "write an address like 192.0.2.10"),
    "ip_any_network": ("{value} is not a valid IP network", "write a network like 10.0.0.0/24"),
}


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated/Optional/containers down to a BaseModel class if there is one."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _unwrap(arg)
            if found is not None:
                return found
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _model_at(model: type[BaseModel] | None, path: Sequence[str]) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``path`` (below ``model``)."""
    current: Any = model
    i = 0
    while current is not None and i < len(path):
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(path[i])
            if info is None:
                return None
            current = info.annotation
            i += 1
            continue
        origin = typing.get_origin(current)
        if origin is typing.Annotated:
            current = typing.get_args(current)[0]
        elif origin in (typing.Union, types.UnionType):
            current = next((a for a in typing.get_args(current) if a is not type(None)), None)
        elif origin in (dict, list, Sequence, typing.Mapping) or origin is not None:
            args = typing.get_args(current)
            current = args[-1] if args else None
            i += 1
        else:
            return None
    return _unwrap(current) if current is not None else None


def _field_names(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return []
    return [info.alias or name for name, info in model.model_fields.items() if not info.exclude]
