"""schemathesis against the live OpenAPI schema: every operation with a valid key, no 5xx, answers as documented.

A real server (uvicorn on loopback, the echo model) takes the generated requests; the admin key holds every
scope, so requests reach the routes rather than stopping at auth. Examples are bounded and derandomized so the
run is the same on every machine.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from portico.app import create_app
from portico.auth.keys import new_key
from tests.conftest import LiveServer, auth_settings, bearer

ADMIN_KEY = new_key().plaintext
EXAMPLES_PER_OPERATION = 25

schema = schemathesis.openapi.from_dict(create_app(auth_settings()).openapi())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    served = auth_settings(admin_key=ADMIN_KEY, data_dir=tmp_path_factory.mktemp("schemathesis"))
    with LiveServer(create_app(served)) as live:
        yield live


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_documented(case: schemathesis.Case, server: LiveServer) -> None:
    # A request the schema allows may still be refused for what it means: an unknown model or id is a 404,
    # `prompt` and `messages` together a 400. Every other check applies: no 5xx, documented statuses, bodies,
    # content types and headers, schema-invalid requests rejected, Allow on a 405.
    case.call_and_validate(base_url=server.url, headers=bearer(ADMIN_KEY), excluded_checks=[positive_data_acceptance])
