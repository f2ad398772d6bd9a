"""FileStore: a watched YAML directory; bad files keep their last valid version in force and are reported."""

from __future__ import annotations

import asyncio
import os
import pathlib
from collections.abc import AsyncIterator

import pytest

from sailmesh.api.resource import Resource, ResourceKey
from sailmesh.store.files import FileStore
from sailmesh.testing.waiting import await_for
from tests.unit.test_store_memory import weight_validator


def vs_yaml(name: str, weight: int = 100) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {name}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: v1}}
      weight: {weight}
"""


DR = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
"""


def weight_of(store: FileStore, name: str) -> int | None:
    r: Resource | None = store.get("VirtualService", "default", name)
    return None if r is None else int(r.spec["http"][0]["route"][0]["weight"])


@pytest.fixture
async def store(tmp_path: pathlib.Path) -> AsyncIterator[FileStore]:
    (tmp_path / "a.yaml").write_text(vs_yaml("r1") + "---\n" + DR)
    s = FileStore(str(tmp_path), weight_validator, rescan_ms=200, debounce_ms=20)
    await s.start()
    try:
        yield s
    finally:
        await s.close()


async def test_initial_load(store: FileStore) -> None:
    assert {str(r.key) for r in store.list()} == {"VirtualService default/r1", "DestinationRule default/reviews"}
    assert store.rejected() == []
    r = store.get("DestinationRule", "default", "reviews")
    assert r is not None and r.source.file.endswith("a.yaml") and r.source.line == 12  # after 10 lines + "---"


async def test_add_modify_delete_files(store: FileStore, tmp_path: pathlib.Path) -> None:
    w = store.watch()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yml").write_text(vs_yaml("r2", 80))
    await await_for(lambda: _async(weight_of(store, "r2") == 80), what="new file loaded")
    change = await asyncio.wait_for(w.__anext__(), 5)
    assert ResourceKey("VirtualService", "default", "r2") in change.keys

    (tmp_path / "sub" / "b.yml").write_text(vs_yaml("r2", 70))
    await await_for(lambda: _async(weight_of(store, "r2") == 70), what="modified file reloaded")
    r2 = store.get("VirtualService", "default", "r2")
    assert r2 is not None and r2.generation == 2

    os.remove(tmp_path / "sub" / "b.yml")
    await await_for(lambda: _async(weight_of(store, "r2") is None), what="deleted file removed")
    assert weight_of(store, "r1") == 100  # other files untouched


async def test_invalid_document_keeps_last_valid_version(store: FileStore, tmp_path: pathlib.Path) -> None:
    rev = store.revision
    # One invalid document (weight 200) in the file: the whole file's new version is refused.
    (tmp_path / "a.yaml").write_text(vs_yaml("r1", 200) + "---\n" + DR.replace("v1}", "v9}"))
    await await_for(lambda: _async(store.rejected()), what="rejection recorded")
    assert weight_of(store, "r1") == 100 and store.revision == rev
    dr = store.get("DestinationRule", "default", "reviews")
    assert dr is not None and dr.spec["subsets"][0]["labels"] == {"version": "v1"}
    [rej] = store.rejected()
    assert rej.file.endswith("a.yaml") and rej.kept and "weight: must be at most 100" in str(rej)
    # Fixing the file clears the rejection and applies the new version.
    (tmp_path / "a.yaml").write_text(vs_yaml("r1", 60) + "---\n" + DR)
    await await_for(lambda: _async(weight_of(store, "r1") == 60), what="fixed file applied")
    assert store.rejected() == []


async def test_bad_input_never_crashes(store: FileStore, tmp_path: pathlib.Path) -> None:
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "broken.yaml").write_text("apiVersion: v1\nkind: [unclosed\n")
    (tmp_path / "good.yaml").write_text(vs_yaml("r3", 10))
    await await_for(lambda: _async(weight_of(store, "r3") == 10), what="good file next to bad ones loaded")
    await await_for(lambda: _async(len(store.rejected()) == 2), what="both bad files reported")
    text = "\n".join(str(r) for r in store.rejected())
    assert "binary.yaml" in text and "not a text file" in text
    assert "broken.yaml" in text and "invalid YAML" in text
    assert not any(r.kept for r in store.rejected())  # never valid: nothing in force from them


async def test_huge_file_rejected(tmp_path: pathlib.Path) -> None:
    (tmp_path / "huge.yaml").write_text(vs_yaml("big") + "#" * 5000)
    s = FileStore(str(tmp_path), max_file_bytes=1000)
    s.load()
    assert s.list() == [] and "file too large" in str(s.rejected()[0])


async def test_git_dirs_ignored_and_duplicates_first_file_wins(tmp_path: pathlib.Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "hidden.yaml").write_text(vs_yaml("from-git"))
    (tmp_path / "10-first.yaml").write_text(vs_yaml("dup", 10))
    (tmp_path / "20-second.yaml").write_text(vs_yaml("dup", 20) + "---\n" + vs_yaml("other"))
    s = FileStore(str(tmp_path))
    s.load()
    assert weight_of(s, "from-git") is None
    assert weight_of(s, "dup") == 10 and weight_of(s, "other") == 100
    [dup] = s.rejected()
    assert dup.file.endswith("20-second.yaml") and "10-first.yaml" in str(dup)
    assert s.file_of(ResourceKey("VirtualService", "default", "dup")).endswith("10-first.yaml")
    # The first file goes away: the second file's version takes over, the report clears.
    os.remove(tmp_path / "10-first.yaml")
    s.load()
    assert weight_of(s, "dup") == 20 and s.rejected() == []


async def test_change_before_watcher_starts_is_caught_by_rescan(tmp_path: pathlib.Path) -> None:
    s = FileStore(str(tmp_path), rescan_ms=100, debounce_ms=20)
    await s.sync()
    (tmp_path / "late.yaml").write_text(vs_yaml("late"))  # written before any watcher exists
    await s.start()
    try:
        await await_for(lambda: _async(weight_of(s, "late") == 100), what="rescan picked up the file")
    finally:
        await s.close()


async def _async(value: object) -> object:
    return value


async def test_directory_removed_keeps_config_then_recovers(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "cfg"
    root.mkdir()
    (root / "a.yaml").write_text(vs_yaml("keep", 30))
    s = FileStore(str(root), rescan_ms=100, debounce_ms=20)
    await s.start()
    try:
        root.rename(tmp_path / "away")  # atomic: the directory vanishes with its file in it
        await await_for(lambda: _async(s.watch_failures > 2), what="retries with the directory gone")
        assert weight_of(s, "keep") == 30  # a vanished directory is not "every file deleted"
        (tmp_path / "away" / "a.yaml").write_text(vs_yaml("keep", 40))
        (tmp_path / "away").rename(root)
        await await_for(lambda: _async(weight_of(s, "keep") == 40), timeout=15, what="directory back")
    finally:
        await s.close()
