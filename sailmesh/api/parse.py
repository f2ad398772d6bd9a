"""Read YAML/JSON files and directories into Resources, recording file and line for every field."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from sailmesh.api import kinds
from sailmesh.api.files import MAX_FILE_BYTES as MAX_FILE_BYTES  # re-exported (validate, kube_inject)
from sailmesh.api.files import iter_files as iter_files  # re-exported (store.files)
from sailmesh.api.files import read_text
from sailmesh.api.resource import DEFAULT_NAMESPACE, Resource, Source
from sailmesh.errors import ParseError

CLUSTER_SCOPED_KINDS = frozenset({"Namespace", "Node", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"})
MAX_NODES = 2_000_000  # guards against alias ("billion laughs") expansion

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"


@dataclass
class LoadResult:
    """Resources read plus every problem met while reading (never raised, always reported).

    `unknown` holds documents whose apiVersion/kind is not in the registry (api/kinds.py); each also has
    an entry in `errors`, so they are never silently dropped.
    """

    resources: list[Resource] = field(default_factory=list)
    errors: list[ParseError] = field(default_factory=list)
    unknown: list[Resource] = field(default_factory=list)

    def extend(self, other: LoadResult) -> None:
        self.resources.extend(other.resources)
        self.errors.extend(other.errors)
        self.unknown.extend(other.unknown)


class _Constructor(yaml.constructor.SafeConstructor):
    """One shared scalar constructor: resolves tags already set by the composer, no loader per scalar."""

    def __init__(self) -> None:
        super().__init__()


_CONSTRUCTOR = _Constructor()
_SCALAR_CONSTRUCTORS = _CONSTRUCTOR.yaml_constructors


class _TooBig(Exception):
    """Internal: the document expands to too many nodes."""


def _scalar(node: yaml.Node) -> Any:
    tag = node.tag
    if tag == _STR:
        return node.value
    if tag == _NULL:
        return None
    if tag == _BOOL:
        return node.value.lower() in ("yes", "true", "on")
    if tag == _INT and node.value.isdigit() and not node.value.startswith("0"):
        return int(node.value)
    ctor = _SCALAR_CONSTRUCTORS.get(tag)
    if ctor is None:
        raise yaml.constructor.ConstructorError(None, None, f"unsupported YAML tag {tag!r}", node.start_mark)
    return ctor(_CONSTRUCTOR, node)


def _flow_scalar(n: yaml.MappingNode, text: str) -> str | None:
    """YAML 1.2 (Kubernetes) reads `[1.2.3.4, 2001:db8::]` as two strings; PyYAML makes a one-pair mapping
    `{"2001:db8:": null}` of the second. Recover the plain scalar from the source text in that case."""
    if len(n.value) != 1 or not text:
        return None
    k, v = n.value[0]
    start, end = n.start_mark.index, n.end_mark.index
    if not (isinstance(k, yaml.ScalarNode) and isinstance(v, yaml.ScalarNode) and k.style is None
            and v.tag == _NULL and v.value == "" and 0 <= start < end <= len(text)) or text[start] == "{":
        return None
    raw = text[start:end].strip()
    return raw if raw == k.value + ":" else None


def _doc_to_python(node: yaml.Node, lines: dict[str, int], text: str = "") -> Any:
    count = 0

    def conv(n: yaml.Node, path: str) -> Any:
        nonlocal count
        count += 1
        if count > MAX_NODES:
            raise _TooBig
        if isinstance(n, yaml.ScalarNode):
            return _scalar(n)
        if isinstance(n, yaml.MappingNode):
            if n.flow_style:
                flat = _flow_scalar(n, text)
                if flat is not None:
                    return flat
            out: dict[str, Any] = {}
            merged: dict[str, Any] = {}
            for k, v in n.value:
                if k.tag == "tag:yaml.org,2002:merge":  # `<<: *base` or `<<: [*a, *b]` (explicit keys win)
                    sources = v.value if isinstance(v, yaml.SequenceNode) else [v]
                    for src in reversed(sources):
                        value = conv(src, path) if isinstance(src, yaml.MappingNode) else None
                        if not isinstance(value, dict):
                            raise yaml.constructor.ConstructorError(None, None, "merge key (<<) needs a mapping",
                                                                    k.start_mark)
                        merged.update(value)
                    continue
                if not isinstance(k, yaml.ScalarNode):
                    raise yaml.constructor.ConstructorError(None, None, "mapping keys must be scalars",
                                                            k.start_mark)
                kv = _scalar(k)
                key = "" if kv is None else str(kv).lower() if isinstance(kv, bool) else str(kv)
                if key in out:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", k.start_mark)
                child = f"{path}.{key}" if path else key
                lines[child] = k.start_mark.line + 1
                out[key] = conv(v, child)
            return {**merged, **out} if merged else out
        if isinstance(n, yaml.SequenceNode):
            items = []
            for i, v in enumerate(n.value):
                child = f"{path}[{i}]"
                lines[child] = v.start_mark.line + 1
                items.append(conv(v, child))
            return items
        raise yaml.constructor.ConstructorError(None, None, "unsupported YAML node", n.start_mark)

    return conv(node, "")


def _yaml_error(e: yaml.YAMLError, file: str, fallback_line: int = 0) -> ParseError:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    line = mark.line + 1 if mark else fallback_line
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context = getattr(e, "context", None)
    msg = f"invalid YAML: {problem}" + (f" ({context})" if context and context not in problem else "")
    return ParseError(msg, file=file, line=line)


def _expand(doc: Any, source: Source) -> list[tuple[Any, Source]]:
    """A `kind: List` (kubectl style) becomes its items; anything else is itself."""
    if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
        out = []
        for i, item in enumerate(doc["items"]):
            prefix = f"items[{i}]"
            sub = {k[len(prefix) + 1:]: v for k, v in source.lines.items() if k.startswith(prefix + ".")}
            out.append((item, Source(source.file, source.lines.get(prefix, source.line), sub)))
        return out
    return [(doc, source)]


def _compose(text: str, file: str, result: LoadResult) -> Iterator[yaml.Node]:
    """Document nodes one at a time (keeping memory flat); a syntax error ends the stream as a ParseError.

    libyaml rejects a few plain scalars YAML 1.2 allows (`[2001:db8::]`); on an error the laxer Python
    parser re-reads the stream, skipping the documents already yielded.
    """
    done = 0
    try:
        for node in yaml.compose_all(text, Loader=_Loader):
            done += 1
            yield node
        return
    except yaml.YAMLError:
        pass
    except RecursionError:
        result.errors.append(ParseError("invalid YAML: nesting too deep", file=file))
        return
    try:
        for i, node in enumerate(yaml.compose_all(text, Loader=yaml.SafeLoader)):
            if i >= done:
                yield node
    except yaml.YAMLError as e:
        result.errors.append(_yaml_error(e, file))
    except RecursionError:
        result.errors.append(ParseError("invalid YAML: nesting too deep", file=file))


def _parse_json(text: str, file: str) -> LoadResult | None:
    """A JSON document YAML cannot read (tabs); fields get the document's line. None if not JSON either."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    result = LoadResult()
    for item, source in _expand(doc, Source(file, 1, {})):
        try:
            res = resource_from_dict(item, source)
        except ParseError as e:
            result.errors.append(e)
            continue
        if kinds.lookup(res.api_version, res.kind) is None:
            result.unknown.append(res)
            result.errors.append(ParseError(kinds.explain_unknown(res.api_version, res.kind), file=file, line=1))
        else:
            result.resources.append(res)
    return result


def parse_text(text: str, file: str = "<input>") -> LoadResult:
    """Parse a multi-document YAML (or JSON) string."""
    result = LoadResult()
    if "\x00" in text:
        result.errors.append(ParseError("not a text file (contains NUL bytes)", file=file))
        return result
    if text.lstrip().startswith("{") and "\t" in text:
        json_result = _parse_json(text, file)  # YAML forbids the tab indentation JSON allows
        if json_result is not None:
            return json_result
    nodes = _compose(text, file, result)
    seen_doc = False
    for node in nodes:
        if node is None:
            continue
        start = node.start_mark.line + 1
        lines: dict[str, int] = {}
        try:
            doc = _doc_to_python(node, lines, text)
        except yaml.YAMLError as e:
            result.errors.append(_yaml_error(e, file, start))
            continue
        except _TooBig:
            result.errors.append(ParseError(f"document expands to more than {MAX_NODES} nodes (alias bomb?)",
                                            file=file, line=start))
            continue
        except RecursionError:
            result.errors.append(ParseError("document nesting too deep", file=file, line=start))
            continue
        if doc is None:
            continue
        seen_doc = True
        for item, source in _expand(doc, Source(file, start, lines)):
            try:
                res = resource_from_dict(item, source)
            except ParseError as e:
                result.errors.append(e)
                continue
            if kinds.lookup(res.api_version, res.kind) is None:
                result.unknown.append(res)
                result.errors.append(ParseError(f"{kinds.explain_unknown(res.api_version, res.kind)}"
                                                f" ({res.kind} {res.name})", file=file, line=source.line))
            else:
                result.resources.append(res)
    if not seen_doc and not result.errors:
        result.errors.append(ParseError("file is empty (no YAML documents)", file=file, line=1 if text else 0))
    return result


def resource_from_dict(doc: Any, source: Source = Source()) -> Resource:
    """Build a Resource from one parsed document."""
    if not isinstance(doc, dict):
        raise ParseError(f"document is a {type(doc).__name__}, not a mapping", file=source.file, line=source.line)
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api_version, str) or not api_version:
        raise ParseError("apiVersion is missing", file=source.file, line=source.line)
    if not isinstance(kind, str) or not kind:
        raise ParseError("kind is missing", file=source.file, line=source.line)
    meta = doc.get("metadata") or {}
    if not isinstance(meta, dict):
        raise ParseError("metadata must be a mapping", file=source.file, line=source.line_of("metadata"))
    name = meta.get("name") or ""
    if not isinstance(name, str):
        name = str(name)
    ns = meta.get("namespace")
    namespace = "" if kind in CLUSTER_SCOPED_KINDS or (kind == "GatewayClass" and api_version.startswith(
        kinds.GATEWAY_API + "/")) else str(ns or DEFAULT_NAMESPACE)
    spec = doc.get("spec")
    if spec is None:
        spec = {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    generation = meta.get("generation")
    return Resource(
        api_version=api_version,
        kind=kinds.internal_kind(api_version, kind),
        name=name,
        namespace=namespace,
        spec=spec,
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        annotations={str(k): str(v) for k, v in annotations.items()} if isinstance(annotations, dict) else {},
        source=source,
        raw=doc,
        generation=generation if isinstance(generation, int) and not isinstance(generation, bool) else 0,
    )


def load_file(path: str, max_bytes: int = MAX_FILE_BYTES) -> LoadResult:
    """Parse one file (refusing files over max_bytes and binary files with a clear error)."""
    text = read_text(path, max_bytes)
    if isinstance(text, ParseError):
        return LoadResult(errors=[text])
    return parse_text(text, path)


def find_duplicates(resources: list[Resource]) -> list[ParseError]:
    """An error for every resource whose kind/namespace/name was already defined earlier in the input."""
    first: dict[tuple[str, str, str, str], Resource] = {}
    errors: list[ParseError] = []
    for r in resources:
        k = (r.group, r.kind, r.namespace, r.name)
        if k in first:
            prev = first[k].source
            errors.append(ParseError(f"duplicate resource {r.key} (first defined at {prev.file}:{prev.line})",
                                     file=r.source.file, line=r.source.line))
        else:
            first[k] = r
    return errors


def load_paths(paths: Iterable[str]) -> LoadResult:
    """Parse every file named or found under the given paths; duplicates after the first are reported."""
    result = LoadResult()
    for p in paths:
        if not os.path.exists(p):
            result.errors.append(ParseError("no such file or directory", file=p))
            continue
        for f in iter_files(p):
            result.extend(load_file(f))
    return _without_duplicates(result)


def load_texts(named: Iterable[tuple[str, str]]) -> LoadResult:
    """Parse (file name, text) pairs read elsewhere (api.files.read_paths), as load_paths parses files."""
    result = LoadResult()
    for name, text in named:
        result.extend(parse_text(text, name))
    return _without_duplicates(result)


def _without_duplicates(result: LoadResult) -> LoadResult:
    """The result with an error for, and without, every resource defined again after its first definition."""
    dups = find_duplicates(result.resources)
    if dups:
        result.errors.extend(dups)
        seen: set[tuple[str, str, str, str]] = set()
        kept = []
        for r in result.resources:
            k = (r.group, r.kind, r.namespace, r.name)
            if k not in seen:
                seen.add(k)
                kept.append(r)
        result.resources = kept
    return result
