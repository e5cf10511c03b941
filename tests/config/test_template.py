from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devdep.config.loader import parse_config
from devdep.config.schema import DEFAULT_BASE_OS
from devdep.config.template import namespace_for, render_template
from devdep.errors import UsageError


def test_the_template_validates_as_written_and_carries_entity_and_domain() -> None:
    config = parse_config(render_template("Acme Corp", "K8s.Prod.Acme.com.")).config

    assert config.metadata.entity == "Acme Corp"
    assert config.metadata.domain == "k8s.prod.acme.com"
    assert config.metadata.namespace == "acme-corp"
    assert config.pipeline.runtimes[0].base_os == DEFAULT_BASE_OS


@settings(max_examples=200, deadline=None)
@given(
    st.text(
        alphabet=st.characters(blacklist_categories=("C", "Zl", "Zp")),
        min_size=1,
        max_size=128,
    ).filter(lambda s: s.strip())
)
def test_any_printable_entity_gives_a_valid_file(entity: str) -> None:
    config = parse_config(render_template(entity, "acme.com")).config
    assert config.metadata.entity == entity.strip()


@pytest.mark.parametrize("domain", ["", "acme", "acme..com", "-acme.com", "ac me.com"])
def test_a_bad_domain_is_a_usage_error(domain: str) -> None:
    with pytest.raises(UsageError, match="not a DNS name"):
        render_template("Acme", domain)


@pytest.mark.parametrize("entity", ["", "   ", "a\nb", "x" * 129])
def test_a_bad_entity_is_a_usage_error(entity: str) -> None:
    with pytest.raises(UsageError):
        render_template(entity, "acme.com")


@pytest.mark.parametrize(
    ("entity", "namespace"),
    [
        ("Acme Corp", "acme-corp"),
        ("Ümlaut GmbH & Co.", "umlaut-gmbh-co"),
        ("€€", "pipeline"),
    ],
)
def test_namespace_is_a_dns_label_made_from_the_entity(
    entity: str, namespace: str
) -> None:
    assert namespace_for(entity) == namespace
