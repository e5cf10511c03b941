"""The commented devdep.yaml that `devdep-cli init` writes."""

from __future__ import annotations

import json
import re
import unicodedata

from devdep.config.schema import DEFAULT_BASE_OS, SUPPORTED_VERSION
from devdep.errors import UsageError

_TEMPLATE = """\
# devdep.yaml: one pipeline for DEVELOPMENT DEPLOYER.
# Reference: docs/config.md. Check it with: devdep-cli validate --file=devdep.yaml
version: "{version}"

metadata:
  entity: {entity}
  domain: {domain}
  namespace: {namespace}      # a DNS label naming this pipeline's space
  owner: {owner}
  environment: {environment}        # 'deploy --env' must name this environment

pipeline:
  runtimes:
    # Each runtime runs in its own fresh micro-VM, one after another.
    - name: build
      vm_vcpus: 1
      vm_memory_mb: 512
      base_os: {base_os}   # an image in the local store: devdep-cli image ls
      timeout: 10m
      # Each step runs with /bin/sh -c in /workspace, a copy of the directory
      # 'deploy' runs in. The first failing step stops the pipeline.
      run_command:
        - echo "building on $(uname -r)"
      # Paths under /workspace copied back to ./devdep-artifacts/<run-id>/.
      artifacts: []
      sandbox:
        read_only_rootfs: true
        network_sandbox: isolated     # isolated: no network | allowlist
        allow_dns_resolution: false

  # Secrets reach the VM's memory only. Uncomment to map them.
  # secrets:
  #   provider: hashicorp-vault     # hashicorp-vault (also OpenBao) | local
  #   address: https://vault.{domain_text}:8200
  #   mount: secret
  #   key_rotation: manual
  #   mappings:
  #     - env: DB_PASSKEY
  #       source: prod/database/api-user/password
"""

# Control, format, unassigned and surrogate characters, and line separators.
_UNPRINTABLE = {"Cc", "Cf", "Cn", "Co", "Cs", "Zl", "Zp"}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DOMAIN = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
)


def namespace_for(entity: str) -> str:
    """A DNS label derived from the entity's name: "Acme Corp" → "acme-corp"."""
    ascii_name = unicodedata.normalize("NFKD", entity).encode("ascii", "ignore")
    label = re.sub(r"[^a-z0-9]+", "-", ascii_name.decode().lower()).strip("-")
    return label[:63].rstrip("-") or "pipeline"


def _quoted(text: str) -> str:
    # A JSON string is a valid YAML double-quoted scalar. Characters outside
    # the BMP stay literal: YAML would read JSON's surrogate-pair escapes as two
    # invalid characters.
    return json.dumps(text, ensure_ascii=False)


def render_template(entity: str, domain: str, environment: str = "production") -> str:
    """The template for `entity` and `domain`; raise UsageError on values that
    could not make a valid file."""
    entity = entity.strip()
    if not entity or len(entity) > 128:
        raise UsageError("--entity must be 1 to 128 characters")
    if any(unicodedata.category(ch) in _UNPRINTABLE for ch in entity):
        raise UsageError("--entity must not contain control or line-break characters")

    normalised_domain = domain.strip().lower().rstrip(".")
    if not _DOMAIN.match(normalised_domain):
        raise UsageError(
            f"--domain {domain!r} is not a DNS name",
            hint="give a domain such as k8s.prod.acme.com",
        )

    if not _DNS_LABEL.match(environment):
        raise UsageError(
            f"--environment {environment!r} is not a DNS label",
            hint="use lowercase letters, digits and '-', such as production",
        )

    return _TEMPLATE.format(
        version=SUPPORTED_VERSION,
        entity=_quoted(entity),
        domain=_quoted(normalised_domain),
        domain_text=normalised_domain,
        namespace=_quoted(namespace_for(entity)),
        owner=_quoted(namespace_for(entity) + "-owners"),
        environment=_quoted(environment),
        base_os=DEFAULT_BASE_OS,
    )
