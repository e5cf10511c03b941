from __future__ import annotations

import pytest

from tests.support.openbao import OpenBaoServer


@pytest.mark.integration
def test_dev_server_answers_with_its_root_token(openbao: OpenBaoServer) -> None:
    with openbao.client() as client:
        answer = client.get("/v1/auth/token/lookup-self")
    assert answer.status_code == 200
    assert answer.json()["data"]["id"] == openbao.root_token
