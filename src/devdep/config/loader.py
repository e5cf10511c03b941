"""Load a devdep.yaml and report every problem in it at its line and column.

The file goes through three stages, and each one reports what it finds as
`ConfigIssue`s rather than raising at the first:

1. bytes to text: size limit, UTF-8;
2. text to a YAML node graph (PyYAML's composer keeps each node's position),
   then to plain data, refusing duplicate keys, cycles and alias bombs;
3. plain data to the pydantic schema, whose error paths are mapped back to
   the positions kept in stage 2.

Whatever the input, the loader raises only ConfigError.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
import yaml

from devdep.config.schema import SUPPORTED_VERSION, PipelineConfig
from devdep.errors import UsageError

MAX_FILE_BYTES = 1024 * 1024
# A real devdep.yaml has a few hundred nodes. Anything past this, once aliases
# are expanded, is an alias bomb or a mistake, and is refused before expansion.
MAX_EXPANDED_NODES = 20_000

ConfigPath = tuple[str | int, ...]


@dataclass(frozen=True, order=True)
class Location:
    """A 1-based line and column in the file."""

    line: int
    column: int


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a devdep.yaml: where, what is wrong, and how to fix it."""

    location: Location | None
    path: str
    message: str
    hint: str | None = None

    def render(self, filename: str) -> str:
        where = filename
        if self.location is not None:
            where = f"{filename}:{self.location.line}:{self.location.column}"
        subject = f" {self.path}:" if self.path else ""
        fix = f" ({self.hint})" if self.hint else ""
        return f"{where}:{subject} {self.message}{fix}"


class ConfigError(UsageError):
    """The devdep.yaml is unreadable or invalid; `issues` lists every problem."""

    def __init__(self, filename: str, issues: list[ConfigIssue]) -> None:
        count = len(issues)
        noun = "error" if count == 1 else "errors"
        super().__init__(
            f"{filename} is invalid: {count} {noun}",
            hint="fix the lines above, then run 'devdep-cli validate' again",
            details=[issue.render(filename) for issue in issues],
        )
        self.filename = filename
        self.issues = issues


@dataclass
class SourceMap:
    """Where each value, and each mapping key, stands in the file."""

    values: dict[ConfigPath, Location] = field(default_factory=dict)
    keys: dict[ConfigPath, Location] = field(default_factory=dict)

    def nearest(self, path: ConfigPath) -> Location | None:
        """The position of `path`, or of its closest ancestor that exists."""
        for length in range(len(path), -1, -1):
            location = self.values.get(path[:length])
            if location is not None:
                return location
        return None


@dataclass(frozen=True)
class LoadedConfig:
    config: PipelineConfig
    filename: str
    source_map: SourceMap

    def issue_at(
        self, path: ConfigPath, message: str, hint: str | None = None
    ) -> ConfigIssue:
        """An issue found by a later check (an image store, a vault), placed at
        `path` in this file."""
        return ConfigIssue(self.source_map.nearest(path), dotted(path), message, hint)


def dotted(path: ConfigPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text


def _location(mark: yaml.Mark | None) -> Location | None:
    if mark is None:
        return None
    return Location(mark.line + 1, mark.column + 1)


class _Problem(Exception):
    """Stops stage 2 at a problem that makes the rest of the graph meaningless."""

    def __init__(self, issue: ConfigIssue) -> None:
        super().__init__(issue.message)
        self.issue = issue


# --- stage 1: bytes to text ---------------------------------------------------


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        raise _Problem(
            ConfigIssue(
                Location(line, column),
                "",
                f"byte 0x{raw[exc.start]:02x} is not UTF-8 text",
                "a devdep.yaml must be a UTF-8 text file",
            )
        ) from exc


# --- stage 2: text to plain data ----------------------------------------------


def _expanded_size(root: yaml.Node) -> int:
    """How many nodes the graph has once every alias is expanded.

    Counted over the shared graph with memoisation, so a bomb is measured in
    time proportional to its text, never to its expansion.
    """
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in in_progress:
            raise _Problem(
                ConfigIssue(
                    _location(node.start_mark),
                    "",
                    "an alias refers to its own anchor, making an endless structure",
                    "remove the self-reference",
                )
            )
        in_progress.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        in_progress.discard(key)
        sizes[key] = min(total, MAX_EXPANDED_NODES + 1)
        return sizes[key]

    return size(root)


class _Converter:
    """Turns a composed node graph into dicts, lists and scalars, recording the
    position of every value and key on the way."""

    def __init__(self, loader: yaml.SafeLoader) -> None:
        self.loader = loader
        self.source_map = SourceMap()
        self._own_keys: dict[int, set[int]] = {}

    def convert(self, node: yaml.Node, path: ConfigPath) -> Any:
        self.source_map.values.setdefault(
            path, _location(node.start_mark) or Location(1, 1)
        )
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [
                self.convert(child, (*path, i)) for i, child in enumerate(node.value)
            ]
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise _Problem(
                ConfigIssue(
                    _location(node.start_mark),
                    dotted(path),
                    f"cannot read this value: {getattr(exc, 'problem', exc)}",
                    "custom YAML tags are not supported; write a plain value",
                )
            ) from exc

    def _mapping(self, node: yaml.MappingNode, path: ConfigPath) -> dict[str, Any]:
        # Keys written in this mapping itself, as opposed to those a `<<` merge
        # brings in: only a repeat among these is a duplicate. Remembered per
        # node because flattening rewrites the node, and aliases revisit it.
        own_keys = self._own_keys.setdefault(
            id(node),
            {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"},
        )
        try:
            # Resolves `<<: *defaults` merge keys into the mapping itself.
            self.loader.flatten_mapping(node)
        except yaml.YAMLError as exc:
            raise _Problem(
                ConfigIssue(
                    _location(node.start_mark),
                    dotted(path),
                    f"invalid merge key: {getattr(exc, 'problem', exc)}",
                )
            ) from exc

        result: dict[str, Any] = {}
        first_seen: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Problem(
                    ConfigIssue(
                        _location(key_node.start_mark),
                        dotted(path),
                        "a key must be a plain word, not a list or mapping",
                    )
                )
            # Keys are taken as written: `yes:` or `1:` are names here, not a
            # boolean or a number, so a typo is reported as an unknown key.
            key = str(key_node.value)
            repeated = first_seen.get(key)
            if repeated is not None and {id(repeated), id(key_node)} <= own_keys:
                first_line = repeated.start_mark.line + 1
                raise _Problem(
                    ConfigIssue(
                        _location(key_node.start_mark),
                        dotted((*path, key)),
                        f"duplicate key '{key}' (first defined on line {first_line})",
                        "keep one of the two",
                    )
                )
            first_seen[key] = key_node
            self.source_map.keys[(*path, key)] = _location(
                key_node.start_mark
            ) or Location(1, 1)
            result[key] = self.convert(value_node, (*path, key))
        return result


def _parse(text: str) -> tuple[Any, SourceMap]:
    try:
        # The reader checks the characters as soon as the loader is made.
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        before = text[: exc.position]
        location = Location(before.count("\n") + 1, len(before.rsplit("\n", 1)[-1]) + 1)
        raise _Problem(
            ConfigIssue(location, "", f"invalid YAML: {exc.reason}")
        ) from exc
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        # PyYAML names a tab as the two characters backslash and t.
        hint = None
        if "'\\t'" in problem:
            hint = "indent with spaces; YAML does not allow tabs"
        raise _Problem(
            ConfigIssue(_location(mark), "", f"invalid YAML: {problem}", hint)
        ) from exc
    except yaml.YAMLError as exc:
        raise _Problem(ConfigIssue(Location(1, 1), "", f"invalid YAML: {exc}")) from exc
    except RecursionError as exc:
        raise _Problem(
            ConfigIssue(Location(1, 1), "", "the YAML is nested too deeply")
        ) from exc
    finally:
        loader.dispose()

    if root is None:
        raise _Problem(
            ConfigIssue(
                Location(1, 1),
                "",
                "the file is empty",
                "create one with 'devdep-cli init --entity=NAME --domain=DOMAIN'",
            )
        )
    if _expanded_size(root) > MAX_EXPANDED_NODES:
        raise _Problem(
            ConfigIssue(
                _location(root.start_mark),
                "",
                f"the document expands to more than {MAX_EXPANDED_NODES} values "
                "through aliases; refusing it as a possible alias bomb",
                "write the values out, or use fewer nested aliases",
            )
        )

    converter = _Converter(loader)
    try:
        data = converter.convert(root, ())
    except RecursionError as exc:
        raise _Problem(
            ConfigIssue(Location(1, 1), "", "the YAML is nested too deeply")
        ) from exc
    return data, converter.source_map


# --- stage 3: plain data to the schema ----------------------------------------


def _models_in(annotation: Any) -> Iterator[type[pydantic.BaseModel]]:
    """Every pydantic model an annotation can hold: through Optional, list and
    Annotated."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        yield annotation
        return
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        yield from _models_in(typing.get_args(annotation)[0])
    elif origin in (list, typing.Union, types.UnionType):
        for argument in typing.get_args(annotation):
            yield from _models_in(argument)


def _fields_at(path: ConfigPath) -> list[str]:
    """The keys the schema allows in the mapping at `path`."""
    models: list[type[pydantic.BaseModel]] = [PipelineConfig]
    for part in path:
        if isinstance(part, int):
            continue
        next_models: list[type[pydantic.BaseModel]] = []
        for model in models:
            field_info = model.model_fields.get(part)
            if field_info is not None:
                next_models.extend(_models_in(field_info.annotation))
        models = next_models
    return sorted({name for model in models for name in model.model_fields})


def _data_path(loc: tuple[int | str, ...], data: Any) -> ConfigPath:
    """The path in the file that a pydantic error location points at.

    Pydantic puts the names of union members and validators, such as
    `function-after[...]`, into locations; they are not keys of the file, so
    they are dropped unless the file really has such a key.
    """
    path: list[str | int] = []
    current = data
    for part in loc:
        in_mapping = isinstance(current, dict) and part in current
        in_list = isinstance(current, list) and isinstance(part, int)
        if in_mapping or (in_list and 0 <= int(part) < len(current)):
            current = current[part]
        elif isinstance(part, str) and "[" in part:
            continue
        else:
            current = None
        path.append(part)
    return tuple(path)


_EXPECTED_BY_TYPE_ERROR = {
    "int_type": "a whole number",
    "bool_type": "true or false",
    "string_type": "text",
    "list_type": "a list",
    "dict_type": "a mapping of keys",
    "model_type": "a mapping of keys",
}


def _issue_from(error: Any, data: Any, source_map: SourceMap) -> ConfigIssue:
    path = _data_path(error["loc"], data)
    kind = error["type"]
    message = str(error["msg"]).removeprefix("Value error, ")
    hint: str | None = None

    if kind == "extra_forbidden" and path:
        key = str(path[-1])
        allowed = _fields_at(path[:-1])
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        message = f"unknown key '{key}'"
        hint = (
            f"did you mean '{close[0]}'?"
            if close
            else f"allowed here: {', '.join(allowed)}"
        )
        return ConfigIssue(
            source_map.keys.get(path) or source_map.nearest(path),
            dotted(path),
            message,
            hint,
        )

    if kind == "missing" and path:
        parent = path[:-1]
        where = source_map.keys.get(parent) or source_map.nearest(parent)
        return ConfigIssue(
            where, dotted(path), f"missing required key '{path[-1]}'", "add it here"
        )

    given = error.get("input")
    if path == ("version",):
        message = f"unsupported version {given!r}"
        hint = f'write version: "{SUPPORTED_VERSION}", the only version supported'
    elif kind == "literal_error":
        expected = str(error.get("ctx", {}).get("expected", ""))
        choices = re.findall(r"'([^']*)'", expected)
        message = f"expected {' or '.join(choices)}, got {given!r}"
        close = difflib.get_close_matches(str(given), choices, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else None
    elif kind in _EXPECTED_BY_TYPE_ERROR:
        message = f"expected {_EXPECTED_BY_TYPE_ERROR[kind]}, got {given!r}"
        if isinstance(given, str) and kind != "string_type":
            hint = "remove the quotes"
        elif kind == "string_type" and isinstance(given, int | float | bool):
            hint = "put the value in quotes"
    return ConfigIssue(source_map.nearest(path), dotted(path), message, hint)


def parse_config(text: str | bytes, filename: str = "devdep.yaml") -> LoadedConfig:
    """Validate a devdep.yaml's content; raise ConfigError listing every problem."""
    try:
        raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
        if len(raw) > MAX_FILE_BYTES:
            raise _Problem(
                ConfigIssue(
                    Location(1, 1),
                    "",
                    f"the file is {len(raw)} bytes; a devdep.yaml may be at most "
                    f"{MAX_FILE_BYTES} bytes",
                )
            )
        data, source_map = _parse(_decode(raw))
    except _Problem as problem:
        raise ConfigError(filename, [problem.issue]) from None

    if not isinstance(data, dict):
        raise ConfigError(
            filename,
            [
                ConfigIssue(
                    source_map.nearest(()),
                    "",
                    f"expected a mapping of keys at the top, got {type(data).__name__}",
                    "start from 'devdep-cli init'",
                )
            ],
        )
    try:
        config = PipelineConfig.model_validate(data)
    except pydantic.ValidationError as exc:
        issues = sorted(
            (_issue_from(error, data, source_map) for error in exc.errors()),
            key=lambda issue: issue.location or Location(0, 0),
        )
        raise ConfigError(filename, issues) from None
    return LoadedConfig(config, filename, source_map)


def load_config(path: Path) -> LoadedConfig:
    """Read and validate the devdep.yaml at `path`."""
    filename = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            # Refuse a huge file before reading it into memory.
            raise ConfigError(
                filename,
                [
                    ConfigIssue(
                        Location(1, 1),
                        "",
                        f"the file is {size} bytes; a devdep.yaml may be at most "
                        f"{MAX_FILE_BYTES} bytes",
                    )
                ],
            )
        raw = path.read_bytes()
    except IsADirectoryError:
        raise UsageError(f"{filename} is a directory, not a devdep.yaml") from None
    except FileNotFoundError:
        raise UsageError(
            f"{filename} does not exist",
            hint="create one with 'devdep-cli init --entity=NAME --domain=DOMAIN'",
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot read {filename}: {exc.strerror or exc}") from None
    return parse_config(raw, filename)
