"""RunSecrets without a VM: redaction of streams, errors and summaries, and the
run-wide log redaction. The real path (OpenBao, a VM) is in test_secrets_vm.py."""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import NamedTuple

import pytest

from devdep.config.schema import Secrets
from devdep.errors import VmBootFailed
from devdep.runner.secrets import RunSecrets
from devdep.telemetry.summary import RunSummary, RuntimeRecord, StepRecord

VALUE = b"s3cr3t-Value-0123456789"


def with_value() -> RunSecrets:
    run_secrets = RunSecrets(None, "r-0000000000")
    run_secrets.redactor.add(VALUE)
    return run_secrets


@pytest.mark.parametrize("cut", range(1, len(VALUE)))
def test_a_value_split_across_chunks_of_one_stream_is_masked(cut: int) -> None:
    streams = with_value().output_streams()

    shown = streams.feed("stdout", b"before " + VALUE[:cut])
    shown += streams.feed("stderr", b"other stream\n")
    shown += streams.feed("stdout", VALUE[cut:] + b" after\n")
    shown += b"".join(rest for _, rest in streams.flush())

    assert VALUE not in shown
    assert b"before *** after\n" in shown.replace(b"other stream\n", b"")


def test_errors_lose_values_in_message_hint_and_details() -> None:
    encoded = base64.b64encode(VALUE).decode()
    error = VmBootFailed(
        f"lost: {VALUE.decode()}",
        hint=f"hint {encoded}",
        details=["guest console (last lines):", f"token={VALUE.hex()}"],
    )

    with_value().redact_error(error)

    assert error.message == "lost: ***"
    assert error.hint == "hint ***"
    assert error.details == ["guest console (last lines):", "token=***"]
    assert VALUE.decode() not in str(error)


def test_the_summary_is_scrubbed_in_place_but_keeps_names() -> None:
    summary = RunSummary(
        run_id="r-0000000000",
        environment="dev",
        config_path="devdep.yaml",
        acceleration="tcg",
        started_at="now",
    )
    summary.error = f"step printed {VALUE.decode()}"
    summary.secret_names = ["DB_PASSKEY"]
    summary.steps.append(StepRecord("build", 1, f"echo {VALUE.decode()}"))

    with_value().scrub(summary)

    assert summary.error == "step printed ***"
    assert summary.secret_names == ["DB_PASSKEY"]
    assert summary.steps[0].command == "echo ***"


def test_a_run_without_mappings_touches_nothing() -> None:
    run_secrets = RunSecrets(
        Secrets.model_validate({"provider": "local", "mappings": []}), "r-1"
    )
    factory = logging.getLogRecordFactory()

    run_secrets.preflight(3)
    run_secrets.open("build", run_ttl=timedelta(minutes=1))

    assert run_secrets.session is None
    assert run_secrets.names == []
    assert logging.getLogRecordFactory() is factory
    run_secrets.close()


def test_log_redaction_lasts_from_preflight_to_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = Secrets.model_validate(
        {"provider": "local", "mappings": [{"env": "DB", "source": "a/b"}]}
    )
    run_secrets = RunSecrets(config, "r-2")
    run_secrets.redactor.add(VALUE)
    log = logging.getLogger("devdep.tests.run_secrets")

    run_secrets.preflight(1)
    with caplog.at_level(logging.INFO):
        log.info("value %s", VALUE.decode())
    run_secrets.close()
    with caplog.at_level(logging.INFO):
        log.info("after %s", "close")

    assert VALUE.decode() not in caplog.text
    assert "value ***" in caplog.text


@dataclass(frozen=True)
class _Violation:
    destination: str
    ports: tuple[str, ...]


class _Pair(NamedTuple):
    left: str
    right: int


def test_frozen_records_and_tuples_in_a_summary_are_copied_redacted() -> None:
    summary = RunSummary(
        run_id="r-0000000000",
        environment="dev",
        config_path="devdep.yaml",
        acceleration="tcg",
        started_at="now",
    )
    summary.runtimes.append(RuntimeRecord("build", "debian", 1, 512))
    summary.runtimes[0].missing_artifacts = [
        _Violation(VALUE.decode(), (VALUE.hex(), "8080")),  # type: ignore[list-item]
        _Pair(VALUE.decode(), 1),  # type: ignore[list-item]
    ]

    with_value().scrub(summary)

    assert summary.runtimes[0].missing_artifacts == [
        _Violation("***", ("***", "8080")),
        _Pair("***", 1),
    ]
