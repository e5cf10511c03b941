"""Which files the workspace copies, and its size limit."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from devdep.errors import UsageError
from devdep.runner.workspace import WorkspaceTooLarge, collect_workspace


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def copied(root: Path) -> set[str]:
    return {
        entry.relative
        for entry in collect_workspace(root).entries
        if entry.kind != "dir"
    }


def test_gitignore_and_devdepignore_are_honoured(tmp_path: Path) -> None:
    tree(
        tmp_path,
        {
            ".gitignore": "*.log\nbuild/\n!keep.log\n",
            ".devdepignore": "data/\n",
            "src/main.c": "int main;",
            "debug.log": "x",
            "keep.log": "x",
            "build/out.o": "x",
            "data/big.bin": "x",
        },
    )
    assert copied(tmp_path) == {".gitignore", ".devdepignore", "src/main.c", "keep.log"}


def test_nested_ignore_files_apply_below_their_directory(tmp_path: Path) -> None:
    tree(
        tmp_path,
        {
            ".gitignore": "*.tmp\n",
            "a/.gitignore": "local.txt\n!wanted.tmp\n",
            "a/local.txt": "x",
            "a/wanted.tmp": "x",
            "a/other.tmp": "x",
            "local.txt": "x",
        },
    )
    assert copied(tmp_path) == {
        ".gitignore",
        "a/.gitignore",
        "a/wanted.tmp",
        "local.txt",
    }


def test_git_and_artifacts_are_never_copied(tmp_path: Path) -> None:
    tree(
        tmp_path,
        {
            ".git/config": "x",
            "devdep-artifacts/r-1/out": "x",
            "sub/.git": "gitdir: ../.git/modules/sub",
            "sub/file": "x",
            ".gitignore": "!.git\n",
        },
    )
    assert copied(tmp_path) == {".gitignore", "sub/file"}


def test_symlinks_are_kept_as_links(tmp_path: Path) -> None:
    tree(tmp_path, {"target.txt": "x"})
    (tmp_path / "link").symlink_to("target.txt")
    kinds = {e.relative: e.kind for e in collect_workspace(tmp_path).entries}
    assert kinds == {"link": "symlink", "target.txt": "file"}


def test_the_size_limit_is_a_usage_error(tmp_path: Path) -> None:
    tree(tmp_path, {"a.bin": "x" * 600, "b.bin": "x" * 600})
    with pytest.raises(WorkspaceTooLarge) as caught:
        collect_workspace(tmp_path, size_limit=1000)
    assert isinstance(caught.value, UsageError)
    assert "the limit" in caught.value.message
    assert ".devdepignore" in (caught.value.hint or "")
    assert collect_workspace(tmp_path, size_limit=1200).size == 1200


def test_ignored_files_do_not_count_toward_the_limit(tmp_path: Path) -> None:
    tree(tmp_path, {".devdepignore": "*.bin\n", "a.bin": "x" * 5000, "b.txt": "y"})
    assert collect_workspace(tmp_path, size_limit=100).file_count == 2


def test_a_missing_workspace_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a directory"):
        collect_workspace(tmp_path / "absent")


def test_the_tar_holds_the_files_owned_by_root(tmp_path: Path) -> None:
    tree(tmp_path, {"src/a.txt": "hello", ".gitignore": "x\n"})
    workspace = collect_workspace(tmp_path)
    buffer = io.BytesIO()
    workspace.write_tar(buffer)
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as tar:
        names = tar.getnames()
        member = tar.getmember("src/a.txt")
        content = tar.extractfile(member)
        assert content is not None and content.read() == b"hello"
        assert member.uid == 0
    assert names == [".gitignore", "src", "src/a.txt"]
