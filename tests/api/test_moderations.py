"""POST /v1/moderations through the openai SDK's ``client.moderations.create``, on the embedded classifier."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from openai import OpenAI

from portico.schemas.moderations import OPENAI_CATEGORIES
from portico.settings.models import MODERATION_SNAPSHOT
from tests.api.test_content_policy import BENIGN, INJECTION, VIOLENT, _with_classifier
from tests.conftest import LiveServer, echo_settings, live_server


@pytest.fixture(scope="module")
def client() -> Iterator[OpenAI]:
    server: LiveServer
    with (
        live_server(_with_classifier(echo_settings())) as server,
        OpenAI(base_url=f"{server.url}/v1", api_key="unused on loopback", max_retries=0) as sdk,
    ):
        yield sdk


def test_a_text_and_a_list_are_scored_in_openais_shape(client: OpenAI) -> None:
    single = client.moderations.create(input=VIOLENT)
    assert single.model == MODERATION_SNAPSHOT and single.id.startswith("modr-")
    [result] = single.results
    assert result.flagged and result.categories.violence
    assert 0.5 <= result.category_scores.violence <= 1.0
    assert set(OPENAI_CATEGORIES) <= set(result.model_dump(by_alias=True)["category_scores"])

    listed = client.moderations.create(input=[BENIGN, VIOLENT, INJECTION], model="omni-moderation-latest")
    benign, violent, injection = listed.results
    assert not benign.flagged and violent.flagged
    # Portico's extra category: scored, but not a reason for `flagged` on its own.
    assert injection.model_dump()["category_scores"]["prompt_injection"] >= 0.5
    assert injection.model_dump()["categories"]["prompt_injection"] is True


def test_text_parts_are_read_and_images_refused(client: OpenAI) -> None:
    parts = client.moderations.create(input=[{"type": "text", "text": VIOLENT}])
    assert parts.results[0].flagged
    with pytest.raises(openai.BadRequestError) as refused:
        client.moderations.create(input=[{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}])
    assert refused.value.body["param"] == "input[0].type"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.moderations.create(input="hello", model="no-such-moderator")
