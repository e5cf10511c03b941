"""Properties of the loader over arbitrary input: it raises nothing but its own
ConfigError, and every error in parseable YAML carries a location."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devdep.config.loader import ConfigError, parse_config
from tests.config.test_loader import VALID

SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.text(max_size=30),
)
keys = st.one_of(
    st.sampled_from(
        [
            "version",
            "metadata",
            "pipeline",
            "runtimes",
            "name",
            "run_command",
            "sandbox",
            "egress",
            "allow",
            "secrets",
            "mappings",
            "env",
            "source",
            "vm_vcpus",
            "timeout",
            "namespace",
            "owner",
            "environment",
        ]
    ),
    st.text(min_size=1, max_size=12),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=25,
)


def assert_only_located_errors(text: str | bytes) -> None:
    try:
        parse_config(text)
    except ConfigError as error:
        assert error.issues
        for issue in error.issues:
            assert issue.location is not None, issue


@SETTINGS
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_located_config_errors(raw: bytes) -> None:
    assert_only_located_errors(raw)


@SETTINGS
@given(st.text(max_size=400))
def test_arbitrary_text_raises_only_located_config_errors(text: str) -> None:
    assert_only_located_errors(text)


@SETTINGS
@given(documents)
def test_arbitrary_yaml_documents_give_located_errors(document: Any) -> None:
    assert_only_located_errors(yaml.safe_dump(document))


def _replace_at(tree: Any, path: list[Any], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(tree, dict) and tree:
        key = sorted(tree)[head % len(tree)]
        return {**tree, key: _replace_at(tree[key], rest, value)}
    if isinstance(tree, list) and tree:
        index = head % len(tree)
        return [
            *tree[:index],
            _replace_at(tree[index], rest, value),
            *tree[index + 1 :],
        ]
    return value


@SETTINGS
@given(st.lists(st.integers(0, 50), max_size=6), documents)
def test_a_valid_file_with_one_value_replaced_gives_located_errors(
    path: list[int], replacement: Any
) -> None:
    tree = yaml.safe_load(VALID)
    assert_only_located_errors(yaml.safe_dump(_replace_at(tree, path, replacement)))


@SETTINGS
@given(st.integers(0, len(VALID)), st.text(max_size=8))
def test_a_valid_file_with_text_inserted_raises_only_located_errors(
    position: int, inserted: str
) -> None:
    assert_only_located_errors(VALID[:position] + inserted + VALID[position:])
