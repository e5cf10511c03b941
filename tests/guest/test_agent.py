"""The guest agent end to end, driven by AgentClient over a socketpair."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from devdep.guest.archive import extract_archive
from devdep.guest.client import ClientState
from devdep.guest.protocol import (
    ERROR_INVALID_REQUEST,
    ERROR_STEP_NOT_STARTED,
    ERROR_UNSAFE_ARCHIVE,
    PROTOCOL_VERSION,
    AgentDisconnected,
    AgentProtocolError,
    AgentRequestFailed,
    MessageType,
    encode_frame,
    encode_json,
)
from tests.guest.conftest import AgentFactory, RunningAgent


def tar_of(*members: tuple[str, bytes | str | None, str]) -> io.BytesIO:
    """A tar stream of (name, content or link target, kind) members."""
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as archive:
        for name, content, kind in members:
            member = tarfile.TarInfo(name)
            if kind == "file":
                assert isinstance(content, bytes)
                member.size = len(content)
                member.mode = 0o644
                archive.addfile(member, io.BytesIO(content))
                continue
            if kind == "dir":
                member.type = tarfile.DIRTYPE
                member.mode = 0o755
            elif kind == "symlink":
                member.type = tarfile.SYMTYPE
                member.linkname = str(content)
            elif kind == "hardlink":
                member.type = tarfile.LNKTYPE
                member.linkname = str(content)
            elif kind == "chardev":
                member.type = tarfile.CHRTYPE
                member.devmajor, member.devminor = 1, 3
            archive.addfile(member)
    stream.seek(0)
    return stream


def run(
    agent: RunningAgent, command: str, env: dict[str, str] | None = None
) -> tuple[int, list[tuple[str, bytes]]]:
    chunks: list[tuple[str, bytes]] = []
    status = agent.client.run_step(
        command,
        env or {},
        lambda channel, data: chunks.append((channel, data)),
        timeout=30,
    )
    return status, chunks


def text_of(chunks: list[tuple[str, bytes]], channel: str) -> str:
    return b"".join(data for name, data in chunks if name == channel).decode()


def test_the_agent_says_hello_with_its_versions_and_boot_id(
    agent: RunningAgent,
) -> None:
    hello = agent.client.hello

    assert hello is not None
    assert hello.protocol_version == PROTOCOL_VERSION
    assert hello.kernel_release == os.uname().release
    assert hello.boot_id == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert agent.client.state is ClientState.READY


def test_the_workspace_is_extracted_and_steps_run_in_it(agent: RunningAgent) -> None:
    agent.client.put_workspace(
        tar_of(
            ("src", None, "dir"),
            ("src/main.sh", b"echo built\n", "file"),
            ("latest", "src/main.sh", "symlink"),
            ("again.sh", "src/main.sh", "hardlink"),
        )
    )

    status, chunks = run(agent, "sh latest && sh again.sh && pwd")

    assert status == 0
    assert text_of(chunks, "stdout") == f"built\nbuilt\n{agent.workspace}\n"
    assert (agent.workspace / "src/main.sh").read_bytes() == b"echo built\n"


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (("../escaped", b"x", "file"), "climbs out"),
        (("src/../../escaped", b"x", "file"), "climbs out"),
        (("/tmp/escaped-absolute", b"x", "file"), "not a relative path"),
        (("link", "../../escaped", "symlink"), "points outside"),
        (("link", "/etc", "symlink"), "absolute path"),
        (("hard", "../escaped", "hardlink"), "climbs out"),
        (("null", None, "chardev"), "device file"),
    ],
)
def test_an_unsafe_workspace_is_refused(
    agent: RunningAgent,
    member: tuple[str, bytes | str | None, str],
    reason: str,
) -> None:
    archive = tar_of(("fine.txt", b"ok", "file"), member, ("after.txt", b"no", "file"))

    with pytest.raises(AgentRequestFailed, match=reason) as refused:
        agent.client.put_workspace(archive)

    assert refused.value.kind == ERROR_UNSAFE_ARCHIVE
    assert not (agent.sysroot / "escaped").exists()
    assert not (agent.workspace / "after.txt").exists()
    assert agent.client.state is ClientState.READY
    agent.client.ping()


def test_a_link_cannot_carry_a_later_member_out(agent: RunningAgent) -> None:
    # Each member alone looks harmless: a link to a directory inside, then a
    # path through it. The second must still be refused.
    archive = tar_of(
        ("deep/er", None, "dir"),
        ("up", "deep/er", "symlink"),
        ("up/../../../escaped", b"x", "file"),
    )

    with pytest.raises(AgentRequestFailed, match=r"climbs out|through a link"):
        agent.client.put_workspace(archive)

    assert not (agent.sysroot / "escaped").exists()


def test_a_link_whose_target_escapes_through_another_link_is_refused(
    agent: RunningAgent,
) -> None:
    # "a/b/c/l" points two levels up, to "a/l2" -> "..", and "esc" then
    # climbs from it: lexically inside, really outside.
    archive = tar_of(
        ("a/b/c", None, "dir"),
        ("a/b/c/up", "../..", "symlink"),
        ("esc", "a/b/c/up/../..", "symlink"),
    )

    with pytest.raises(AgentRequestFailed) as refused:
        agent.client.put_workspace(archive)

    assert refused.value.kind == ERROR_UNSAFE_ARCHIVE


def test_a_stream_that_is_not_a_tar_is_refused(agent: RunningAgent) -> None:
    with pytest.raises(AgentRequestFailed) as refused:
        agent.client.put_workspace(io.BytesIO(b"this is not a tar archive" * 100))

    assert refused.value.kind == "bad_archive"
    agent.client.ping()


def test_a_large_workspace_arrives_whole(agent: RunningAgent) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)

    agent.client.put_workspace(tar_of(("blob.bin", payload, "file")))

    assert (agent.workspace / "blob.bin").read_bytes() == payload


def test_output_streams_in_order_with_its_channel(agent: RunningAgent) -> None:
    agent.client.put_workspace(tar_of())

    status, chunks = run(
        agent,
        "echo out1; sleep 0.2; echo err1 >&2; sleep 0.2; echo out2; sleep 0.2; "
        "echo err2 >&2",
    )

    assert status == 0
    assert chunks == [
        ("stdout", b"out1\n"),
        ("stderr", b"err1\n"),
        ("stdout", b"out2\n"),
        ("stderr", b"err2\n"),
    ]


def test_output_arrives_while_the_step_is_still_running(agent: RunningAgent) -> None:
    # The step waits for a file that the callback creates only once it has
    # seen the first line, so buffered output would never let it finish.
    agent.client.put_workspace(tar_of())
    go = agent.workspace / "go"
    seen: list[float] = []

    def on_output(channel: str, data: bytes) -> None:
        seen.append(time.monotonic())
        go.touch()

    status = agent.client.run_step(
        "echo waiting; while [ ! -e go ]; do sleep 0.05; done; echo done",
        {},
        on_output,
        timeout=20,
    )

    assert status == 0
    assert len(seen) == 2


@pytest.mark.parametrize(
    ("command", "expected"),
    [("true", 0), ("exit 3", 3), ("kill -9 $$", 137), ("kill -TERM $$", 143)],
)
def test_the_exit_status_is_returned(
    agent: RunningAgent, command: str, expected: int
) -> None:
    agent.client.put_workspace(tar_of())

    assert run(agent, command)[0] == expected


def test_a_step_that_cannot_start_is_reported(agent: RunningAgent) -> None:
    # No workspace was sent, so there is no directory to start the step in.
    with pytest.raises(AgentRequestFailed) as refused:
        run(agent, "true")

    assert refused.value.kind == ERROR_STEP_NOT_STARTED
    agent.client.ping()


def test_background_processes_do_not_hold_the_step_open(agent: RunningAgent) -> None:
    agent.client.put_workspace(tar_of())
    started = time.monotonic()

    status, chunks = run(agent, "sleep 5 & echo $! > sleeper; echo done")

    sleeper = int((agent.workspace / "sleeper").read_text())
    os.kill(sleeper, 9)
    assert status == 0
    assert text_of(chunks, "stdout") == "done\n"
    assert time.monotonic() - started < 4


def test_steps_get_a_clean_environment(agent_factory: AgentFactory) -> None:
    agent = agent_factory(extra_env={"AGENT_ONLY_VARIABLE": "leak"})
    agent.client.wait_ready(timeout=20)
    agent.client.put_workspace(tar_of())

    status, chunks = run(agent, "env", {"BUILD_MODE": "release"})

    variables = dict(
        line.split("=", 1) for line in text_of(chunks, "stdout").splitlines()
    )
    assert status == 0
    assert variables["PATH"].startswith("/usr/local/sbin:")
    assert variables["HOME"] == "/root"
    assert variables["BUILD_MODE"] == "release"
    assert "AGENT_ONLY_VARIABLE" not in variables
    assert "PYTHONPATH" not in variables


def test_secrets_are_0400_files_and_exported_to_later_steps(
    agent: RunningAgent,
) -> None:
    agent.client.put_workspace(tar_of())
    secret_file = agent.sysroot / "run/devdep/secrets/API_TOKEN"

    agent.client.put_secret("API_TOKEN", b"first-value")
    first = run(agent, 'printf %s "$API_TOKEN"')
    agent.client.put_secret("API_TOKEN", b"second-value")
    second = run(agent, 'printf %s "$API_TOKEN"')

    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o400
    assert stat.S_IMODE(secret_file.parent.stat().st_mode) == 0o700
    assert secret_file.read_bytes() == b"second-value"
    assert text_of(first[1], "stdout") == "first-value"
    assert text_of(second[1], "stdout") == "second-value"
    assert [path.name for path in secret_file.parent.iterdir()] == ["API_TOKEN"]
    assert "value" not in agent.log()


def test_a_step_variable_wins_over_a_secret_of_the_same_name(
    agent: RunningAgent,
) -> None:
    agent.client.put_workspace(tar_of())
    agent.client.put_secret("TOKEN", b"from-vault")

    _, chunks = run(agent, 'printf %s "$TOKEN"', {"TOKEN": "from-step"})

    assert text_of(chunks, "stdout") == "from-step"


def test_a_binary_secret_is_a_file_but_not_an_environment_variable(
    agent: RunningAgent,
) -> None:
    agent.client.put_workspace(tar_of())

    agent.client.put_secret("KEYTAB", b"\x00\x01binary")
    _, chunks = run(agent, 'printf %s "${KEYTAB-unset}"')

    assert (
        agent.sysroot / "run/devdep/secrets/KEYTAB"
    ).read_bytes() == b"\x00\x01binary"
    assert text_of(chunks, "stdout") == "unset"


def test_a_secret_with_a_bad_name_is_refused_by_the_agent(
    agent: RunningAgent,
) -> None:
    agent.host_socket.sendall(
        encode_json(
            MessageType.REQUEST,
            {"op": "put_secret", "name": "../../etc/passwd", "value": "eA=="},
        )
    )

    reply = agent.host_socket.recv(4096)

    assert reply[6] == MessageType.ERROR
    assert ERROR_INVALID_REQUEST.encode() in reply
    assert not (agent.sysroot / "etc").exists()


def test_the_client_refuses_a_bad_secret_name_itself(agent: RunningAgent) -> None:
    with pytest.raises(ValueError, match="variable name"):
        agent.client.put_secret("NOT-A-NAME", b"x")


def test_artifacts_come_back_and_missing_ones_are_named(
    agent: RunningAgent, tmp_path: Path
) -> None:
    agent.client.put_workspace(tar_of())
    run(
        agent,
        "mkdir -p dist/sub && echo wheel > dist/a.whl && echo deep > dist/sub/b "
        "&& echo report > report.txt && ln -s /etc escape",
    )
    archive = io.BytesIO()

    missing = agent.client.get_artifacts(
        ["dist/", "report.txt", "nothing-here", "escape/passwd"], archive
    )

    archive.seek(0)
    extract_archive(archive, str(tmp_path / "out"))
    assert missing == ["nothing-here", "escape/passwd"]
    assert (tmp_path / "out/dist/a.whl").read_text() == "wheel\n"
    assert (tmp_path / "out/dist/sub/b").read_text() == "deep\n"
    assert (tmp_path / "out/report.txt").read_text() == "report\n"


def test_large_artifacts_stream_in_chunks(agent: RunningAgent) -> None:
    agent.client.put_workspace(tar_of())
    run(agent, "head -c 5000000 /dev/urandom > big.bin")
    archive = io.BytesIO()

    assert agent.client.get_artifacts(["big.bin"], archive) == []

    archive.seek(0)
    with tarfile.open(fileobj=archive) as received:
        member = received.extractfile("big.bin")
        assert member is not None
        assert member.read() == (agent.workspace / "big.bin").read_bytes()


@pytest.mark.parametrize("path", ["../outside", "/etc/passwd", ""])
def test_artifact_paths_that_leave_the_workspace_are_refused(
    agent: RunningAgent, path: str
) -> None:
    agent.client.put_workspace(tar_of())

    with pytest.raises(AgentRequestFailed) as refused:
        agent.client.get_artifacts([path], io.BytesIO())

    assert refused.value.kind == ERROR_INVALID_REQUEST
    agent.client.ping()


def test_an_unknown_operation_is_refused_and_the_agent_serves_on(
    agent: RunningAgent,
) -> None:
    agent.host_socket.sendall(encode_json(MessageType.REQUEST, {"op": "format_disk"}))
    reply = agent.host_socket.recv(4096)

    assert reply[6] == MessageType.ERROR
    assert b"format_disk" in reply


def test_a_protocol_violation_ends_the_agent(agent: RunningAgent) -> None:
    agent.host_socket.sendall(b"GET / HTTP/1.1\r\n\r\n")

    assert agent.process.wait(timeout=10) == 1
    assert "protocol error" in agent.log()


def test_data_out_of_turn_ends_the_agent(agent: RunningAgent) -> None:
    agent.host_socket.sendall(encode_frame(MessageType.DATA, b"stray"))

    assert agent.process.wait(timeout=10) == 1


def test_poweroff_ends_the_agent_on_the_host(agent: RunningAgent) -> None:
    agent.client.poweroff()

    assert agent.process.wait(timeout=10) == 0
    assert "poweroff asked for: exiting" in agent.log()


def test_losing_the_host_mid_step_kills_the_step(agent: RunningAgent) -> None:
    agent.client.put_workspace(tar_of())

    def hang_up(channel: str, data: bytes) -> None:
        agent.host_socket.shutdown(2)

    with pytest.raises((AgentDisconnected, AgentProtocolError)):
        agent.client.run_step(
            "echo $$ > step.pid; echo started; exec sleep 30", {}, hang_up, timeout=20
        )

    assert agent.process.wait(timeout=10) == 0
    step_pid = int((agent.workspace / "step.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(step_pid, 0)
    assert agent.client.state is ClientState.BROKEN


SYSTEM_PYTHON = Path("/usr/bin/python3")


@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="no system Python")
def test_the_agent_runs_on_the_system_python(agent_factory: AgentFactory) -> None:
    # The guest's agent runtime is Debian's Python, which may predate the
    # tarfile data filter; the agent must be just as strict there.
    source = Path(__file__).resolve().parents[2] / "src"
    agent = agent_factory(
        python=str(SYSTEM_PYTHON), extra_env={"PYTHONPATH": str(source)}
    )
    agent.client.wait_ready(timeout=20)

    with pytest.raises(AgentRequestFailed) as refused:
        agent.client.put_workspace(tar_of(("link", "../..", "symlink")))
    agent.client.put_workspace(tar_of(("hello.txt", b"hi", "file")))
    status, chunks = run(agent, "cat hello.txt; exit 4")

    assert refused.value.kind == ERROR_UNSAFE_ARCHIVE
    assert (status, text_of(chunks, "stdout")) == (4, "hi")


BUSYBOX = Path("/bin/busybox")


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
@pytest.mark.skipif(not BUSYBOX.exists(), reason="needs busybox-static")
def test_steps_run_chrooted_into_the_sysroot(agent_factory: AgentFactory) -> None:
    agent = agent_factory(extra_arguments=())
    (agent.sysroot / "bin").mkdir()
    shutil.copy(BUSYBOX, agent.sysroot / "bin/busybox")
    (agent.sysroot / "bin/sh").symlink_to("busybox")
    (agent.sysroot / "etc").mkdir()
    (agent.sysroot / "etc/os-release").write_text("ID=devdep-test\n")
    agent.client.wait_ready(timeout=20)
    agent.client.put_workspace(tar_of(("in-workspace.txt", b"yes", "file")))
    agent.client.put_secret("API_TOKEN", b"t0ken")

    status, chunks = run(
        agent,
        "busybox pwd; busybox cat /etc/os-release in-workspace.txt; echo; "
        "busybox cat /run/devdep/secrets/API_TOKEN; echo; "
        'echo "$HOME $API_TOKEN"; busybox ls /',
    )

    lines = text_of(chunks, "stdout").splitlines()
    assert status == 0
    assert lines[:5] == ["/workspace", "ID=devdep-test", "yes", "t0ken", "/root t0ken"]
    assert set(lines[5:]) == {"bin", "etc", "run", "workspace"}


def test_steps_leave_no_descriptors_or_children_behind(agent: RunningAgent) -> None:
    agent.client.put_workspace(tar_of())
    descriptors = Path(f"/proc/{agent.process.pid}/fd")
    run(agent, "true")
    before = len(list(descriptors.iterdir()))

    for command in ["true", "exit 1", "kill -9 $$", "echo out; echo err >&2"] * 5:
        run(agent, command)

    children = Path(f"/proc/{agent.process.pid}/task/{agent.process.pid}/children")
    assert len(list(descriptors.iterdir())) == before
    assert children.read_text().split() == []


HEAVY_MODULES = {
    "argparse",
    "collections",
    "contextlib",
    "ctypes",
    "dataclasses",
    "enum",
    "functools",
    "inspect",
    "json",
    "logging",
    "pathlib",
    "re",
    "shutil",
    "signal",
    "socket",
    "subprocess",
    "tarfile",
    "typing",
}


def test_the_agent_imports_stay_light(tmp_path: Path) -> None:
    # As on the agent runtime disk: devdep.guest beside a stub devdep package.
    package = tmp_path / "devdep"
    shutil.copytree(
        Path(__file__).resolve().parents[2] / "src/devdep/guest",
        package / "guest",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (package / "__init__.py").write_text("")
    probe = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); "
        "import devdep.guest.agent; print(' '.join(sorted(sys.modules)))"
    )

    loaded = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()

    assert HEAVY_MODULES.isdisjoint(loaded), HEAVY_MODULES.intersection(loaded)


def test_a_secret_value_that_is_not_base64_is_refused(agent: RunningAgent) -> None:
    agent.host_socket.sendall(
        encode_json(
            MessageType.REQUEST, {"op": "put_secret", "name": "TOKEN", "value": "a!b="}
        )
    )

    reply = agent.host_socket.recv(4096)

    assert reply[6] == MessageType.ERROR
    assert b"not base64" in reply
    assert not (agent.sysroot / "run/devdep/secrets/TOKEN").exists()
