"""Read YAML/JSON files and directories into Resources, recording file and line for every field."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from sailmesh.api.resource import DEFAULT_NAMESPACE, Resource, Source
from sailmesh.errors import ParseError

CLUSTER_SCOPED_KINDS = frozenset({"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"})
YAML_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass
class LoadResult:
    """Resources read plus every problem met while reading (never raised, always reported)."""

    resources: list[Resource] = field(default_factory=list)
    errors: list[ParseError] = field(default_factory=list)


def _scalar(node: yaml.ScalarNode) -> Any:
    loader = yaml.SafeLoader("")
    return loader.construct_object(node, deep=True)


def _doc_to_python(node: yaml.Node, lines: dict[str, int]) -> Any:
    def conv(n: yaml.Node, path: str) -> Any:
        if path:
            lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            out: dict[str, Any] = {}
            for k, v in n.value:
                key = str(_scalar(k)) if isinstance(k, yaml.ScalarNode) else str(k.value)
                child = f"{path}.{key}" if path else key
                lines[child] = k.start_mark.line + 1
                out[key] = conv(v, child)
            return out
        if isinstance(n, yaml.SequenceNode):
            return [conv(v, f"{path}[{i}]") for i, v in enumerate(n.value)]
        return _scalar(n)  # type: ignore[arg-type]

    return conv(node, "")


def parse_text(text: str, file: str = "<input>") -> LoadResult:
    """Parse a multi-document YAML (or JSON) string."""
    result = LoadResult()
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else 0
        problem = getattr(e, "problem", None) or str(e)
        result.errors.append(ParseError(f"invalid YAML: {problem}", file=file, line=line))
        return result
    for node in nodes:
        if node is None:
            continue
        lines: dict[str, int] = {}
        try:
            doc = _doc_to_python(node, lines)
        except yaml.YAMLError as e:
            result.errors.append(ParseError(f"invalid YAML: {e}", file=file, line=node.start_mark.line + 1))
            continue
        start = node.start_mark.line + 1
        if doc is None:
            continue
        try:
            result.resources.append(resource_from_dict(doc, Source(file, start, lines)))
        except ParseError as e:
            result.errors.append(e)
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
    namespace = "" if kind in CLUSTER_SCOPED_KINDS else str(ns or DEFAULT_NAMESPACE)
    spec = doc.get("spec")
    if spec is None:
        spec = {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    return Resource(
        api_version=api_version,
        kind=kind,
        name=name,
        namespace=namespace,
        spec=spec,
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        annotations={str(k): str(v) for k, v in annotations.items()} if isinstance(annotations, dict) else {},
        source=source,
        raw=doc,
        generation=int(meta.get("generation") or 0) if str(meta.get("generation") or "0").isdigit() else 0,
    )


def iter_files(path: str) -> Iterable[str]:
    """The YAML/JSON files under path (or path itself), in a stable order."""
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in sorted(files):
                if f.endswith(YAML_SUFFIXES):
                    yield os.path.join(root, f)
    else:
        yield path


def load_file(path: str) -> LoadResult:
    """Parse one file."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError:
        return LoadResult(errors=[ParseError("not a text file (invalid UTF-8)", file=path)])
    except OSError as e:
        return LoadResult(errors=[ParseError(f"cannot read: {e.strerror}", file=path)])
    return parse_text(text, path)


def load_paths(paths: Iterable[str]) -> LoadResult:
    """Parse every file named or found under the given paths."""
    result = LoadResult()
    for p in paths:
        if not os.path.exists(p):
            result.errors.append(ParseError("no such file or directory", file=p))
            continue
        for f in iter_files(p):
            r = load_file(f)
            result.resources.extend(r.resources)
            result.errors.extend(r.errors)
    return result
