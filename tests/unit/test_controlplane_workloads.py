"""The control plane's workload-file follower: the registry holds exactly the file, and only changed entries move."""

from __future__ import annotations

import json
import pathlib

from sailmesh.controlplane.workloads import WorkloadFileFollower
from sailmesh.platform import workload_file
from sailmesh.registry.model import Workload
from sailmesh.registry.workloads import LocalRegistry


def _w(name: str, version: str = "v1", address: str = "127.0.10.1") -> Workload:
    return Workload(name=name, namespace="default", address=address, labels={"app": "web", "version": version})


def _follower(tmp_path: pathlib.Path, workloads: list[Workload]) -> tuple[WorkloadFileFollower, LocalRegistry]:
    path = str(tmp_path / "workloads.json")
    workload_file.write(path, workloads)
    reg = LocalRegistry()
    follower = WorkloadFileFollower(path, reg)
    follower.load()
    return follower, reg


def _new_version(follower: WorkloadFileFollower, workloads: list[Workload]) -> None:
    workload_file.write(follower.path, workloads)
    changes = follower.read()
    assert changes is not None
    follower.apply(changes)


def test_a_new_version_registers_exactly_the_file_and_moves_only_what_changed(tmp_path: pathlib.Path) -> None:
    follower, reg = _follower(tmp_path, [_w("a"), _w("b", address="127.0.10.2"), _w("c", address="127.0.10.3")])
    assert [w.name for w in reg.workloads()] == ["a", "b", "c"]
    rev = reg.revision
    # b changes version, c goes, d comes; a is unchanged
    _new_version(follower, [_w("a"), _w("b", "v2", "127.0.10.2"), _w("d", address="127.0.10.4")])
    assert [(w.name, w.labels["version"]) for w in reg.workloads()] == [("a", "v1"), ("b", "v2"), ("d", "v1")]
    assert reg.revision == rev + 3  # b replaced, c removed, d added: a published nothing
    rev = reg.revision
    _new_version(follower, [_w("a"), _w("b", "v2", "127.0.10.2"), _w("d", address="127.0.10.4")])
    assert reg.revision == rev  # the same file again: no event at all


def test_only_changed_entries_are_parsed_into_workloads(tmp_path: pathlib.Path) -> None:
    follower, _ = _follower(tmp_path, [_w(f"w{i}", address=f"127.0.10.{i + 1}") for i in range(50)])
    workload_file.write(follower.path, [_w(f"w{i}", "v2" if i == 7 else "v1", f"127.0.10.{i + 1}") for i in range(50)])
    changes = follower.read()
    assert changes is not None
    assert [w.name for w in changes.changed] == ["w7"] and changes.removed == []


def test_an_unreadable_version_keeps_the_registry_and_the_next_good_one_applies(tmp_path: pathlib.Path) -> None:
    follower, reg = _follower(tmp_path, [_w("a"), _w("b", address="127.0.10.2")])
    before = reg.workloads()
    pathlib.Path(follower.path).write_text(json.dumps({"workloads": [{"namespace": "default"}]}))  # no name
    assert follower.read() is None
    pathlib.Path(follower.path).write_text("{not json")
    assert follower.read() is None
    assert reg.workloads() == before
    _new_version(follower, [_w("b", address="127.0.10.2")])
    assert [w.name for w in reg.workloads()] == ["b"]


def test_a_removed_file_means_no_workloads(tmp_path: pathlib.Path) -> None:
    follower, reg = _follower(tmp_path, [_w("a")])
    pathlib.Path(follower.path).unlink()
    changes = follower.read()
    assert changes is not None
    follower.apply(changes)
    assert reg.workloads() == ()
