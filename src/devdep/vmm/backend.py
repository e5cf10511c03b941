"""What every VMM backend offers, and the errors it raises.

A VM moves through `VmState` in one direction::

    CREATED --launch--> UP --wait_ready--> READY --shutdown/kill--> STOPPED
                         \\________________________________________/
                                (a boot failure or kill ends here too)

*Up* means the VMM process runs; *ready* means the guest agent said hello.
The errors, all raised `from` what caused them::

    VmBootFailed (301)
     ├── VmLaunchFailed     the VMM process would not start or died at once
     └── VmNotReady         the guest never said hello within the boot timeout
    VmStateError            a method was called in a state it does not accept
                            (a bug in the caller, so no mapped exit code)
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterable

from devdep.errors import DevdepError, VmBootFailed
from devdep.guest.client import AgentClient
from devdep.guest.protocol import AgentHello


class VmState(enum.Enum):
    CREATED = "created"
    UP = "up"  # the VMM process runs; the guest may still be booting
    READY = "ready"  # the guest agent said hello
    STOPPED = "stopped"  # the VMM process has exited and been reaped


class VmStateError(DevdepError):
    """A lifecycle method was called in a state that does not allow it."""

    def __init__(self, method: str, needed: Iterable[VmState], actual: VmState) -> None:
        names = " or ".join(state.value for state in needed)
        super().__init__(f"{method}() needs the VM {names}, but it is {actual.value}")
        self.method = method
        self.actual = actual


class VmLaunchFailed(VmBootFailed):
    """The VMM process could not be started, or exited before the guest was ready."""

    def __init__(
        self,
        message: str,
        *,
        command: list[str],
        exit_code: int | None,
        output_tail: list[str],
    ) -> None:
        status = "still running" if exit_code is None else f"exit code {exit_code}"
        super().__init__(
            message,
            hint="the last lines the VMM and the guest console printed are above",
            details=[
                f"command: {' '.join(command)}",
                f"status: {status}",
                *output_tail,
            ],
        )
        self.command = command
        self.exit_code = exit_code
        self.output_tail = output_tail


class VmNotReady(VmBootFailed):
    """The guest booted too slowly, or never started its agent."""

    def __init__(self, message: str, *, console_tail: list[str]) -> None:
        super().__init__(
            message,
            hint="the last lines of the guest console are above",
            details=["guest console (last lines):", *console_tail],
        )
        self.console_tail = console_tail


class VmBackend(abc.ABC):
    """One micro-VM: launch it, wait for its agent, and stop it."""

    @property
    @abc.abstractmethod
    def state(self) -> VmState: ...

    @abc.abstractmethod
    def launch(self) -> None:
        """Start the VMM process: CREATED -> UP."""

    @abc.abstractmethod
    def wait_ready(self, timeout: float) -> AgentHello:
        """Wait until the guest agent says hello: UP -> READY."""

    @property
    @abc.abstractmethod
    def agent(self) -> AgentClient:
        """The connected agent; only when READY."""

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the VMM process to exit; its exit code, or None on timeout."""

    @abc.abstractmethod
    def shutdown(self, timeout: float) -> None:
        """Ask the guest to power off, then force it once `timeout` is spent."""

    @abc.abstractmethod
    def kill(self) -> None:
        """Stop the VMM process at once. Safe in any state, and more than once."""

    @abc.abstractmethod
    def console_tail(self, lines: int = 40) -> list[str]:
        """The last lines the guest wrote to its serial console."""
