"""The playground page: served same-origin and public, and, in a real headless Chromium, a chat that streams.

The browser tests drive the Debian ``chromium`` through its ``chromedriver`` (both from apt), so Selenium never
downloads a browser or a driver.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from portico.auth.keys import new_key
from portico.constants import FinishReason
from portico.engines.base import Generation, GenerationRequest
from portico.engines.echo import EchoEngine
from portico.errors import EngineError
from portico.settings import PricingSettings, Settings
from tests.conftest import ECHO_ALIAS, asgi_client, auth_settings, bearer, echo_settings, live_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT = Path(__file__).parents[1] / "artifacts" / "playground.png"
# 60 words: three seconds of answer at 20 tokens/s, long enough to watch it grow.
LONG_PROMPT = " ".join(f"word{i}" for i in range(60))
USAGE_LINE = re.compile(
    r"^(?P<prompt>\d+) prompt \+ (?P<completion>\d+) completion tokens · cost \$(?P<cost>\d+\.\d{6})"
    r" · request (?P<request>req_\w+) · TTFT \d+ ms$"
)
T = TypeVar("T")


def priced_echo_settings() -> Settings:
    """A slow echo model (so the answer is seen growing) with prices (so the cost shown is not zero)."""
    settings = echo_settings(tokens_per_second=20, context_window=1024)
    settings.models[0].pricing = PricingSettings(input_per_million=1_000.0, output_per_million=2_000.0)
    return settings


async def test_page_and_assets_are_served_same_origin_without_a_key() -> None:
    async with asgi_client(auth_settings()) as (http, _):
        page = await http.get("/playground")
        assets = {path: await http.get(path) for path in re.findall(r'(?:src|href)="([^"]+)"', page.text)}

    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert set(assets) == {"/playground/playground.css", "/playground/playground.js"}
    assert assets["/playground/playground.js"].headers["content-type"].startswith("text/javascript")
    assert assets["/playground/playground.css"].headers["content-type"].startswith("text/css")
    for text in [page.text, *(response.text for response in assets.values())]:
        assert "http://" not in text and "https://" not in text and "@import" not in text and "url(" not in text
    script = assets["/playground/playground.js"].text
    assert set(re.findall(r'fetch\("([^"]+)"', script)) == {"/v1/models", "/v1/chat/completions"}


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: install them with 'apt-get install -y chromium chromium-driver'")
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download a browser or a driver
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--window-size=1100,820",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(browser: WebDriver, condition: Callable[[WebDriver], T], timeout: float = 20) -> T:
    return WebDriverWait(browser, timeout, poll_frequency=0.05).until(condition)


def open_playground(browser: WebDriver, url: str) -> None:
    browser.get(f"{url}/playground")


def models_listed(browser: WebDriver) -> list[str]:
    return [option.text for option in Select(browser.find_element(By.ID, "model")).options]


def status(browser: WebDriver) -> str:
    return browser.find_element(By.ID, "status").text


def send(browser: WebDriver, prompt: str) -> None:
    """Types the prompt and presses Enter, as a user would; returns once the answer's bubble exists."""
    before = len(answers(browser))
    browser.find_element(By.ID, "prompt").send_keys(prompt, Keys.ENTER)
    wait_for(browser, lambda b: len(answers(b)) > before)


def answers(browser: WebDriver) -> list[Any]:
    return browser.find_elements(By.CSS_SELECTOR, "#transcript .message.assistant")


def answer_text(browser: WebDriver) -> str:
    text: str = answers(browser)[-1].find_element(By.CLASS_NAME, "text").text
    return text


def usage_of_last_answer(browser: WebDriver) -> re.Match[str]:
    line = wait_for(browser, lambda b: answers(b)[-1].find_elements(By.CLASS_NAME, "usage"))[0].text
    match = USAGE_LINE.match(line)
    assert match, f"unexpected usage line: {line!r}"
    return match


def paste_key(browser: WebDriver, key: str) -> None:
    field = browser.find_element(By.ID, "api-key")
    field.clear()
    field.send_keys(key, Keys.TAB)  # leaving the field commits it, as a change event


@pytest.mark.slow
def test_an_answer_streams_in_then_shows_its_usage(browser: WebDriver) -> None:
    with live_server(priced_echo_settings()) as server:
        open_playground(browser, server.url)
        wait_for(browser, lambda b: models_listed(b) == [ECHO_ALIAS])
        send(browser, LONG_PROMPT)

        first_sample = wait_for(browser, answer_text)
        streaming_while_sampled = not answers(browser)[-1].find_elements(By.CLASS_NAME, "usage")
        second_sample = wait_for(browser, lambda b: (text := answer_text(b)) != first_sample and text)
        first = usage_of_last_answer(browser)
        final = answer_text(browser)

        send(browser, "again")
        second = usage_of_last_answer(browser)
        SCREENSHOT.parent.mkdir(exist_ok=True)
        browser.save_screenshot(str(SCREENSHOT))

        browser.find_element(By.ID, "new-chat").click()
        assert answers(browser) == []
        send(browser, "again")
        fresh = usage_of_last_answer(browser)

    assert streaming_while_sampled, "the usage line was already there: the answer did not stream"
    assert final == LONG_PROMPT
    assert final.startswith(second_sample) and second_sample.startswith(first_sample)
    assert len(first_sample) < len(second_sample) < len(final)
    assert int(first["completion"]) == 60 and first["request"] != second["request"]
    assert first["cost"] == f"{(int(first['prompt']) * 1_000 + 60 * 2_000) / 1e6:.6f}"
    # The second turn sends the whole conversation; a new chat starts from nothing again.
    assert int(second["prompt"]) > int(first["prompt"]) + 60
    assert int(fresh["prompt"]) < int(first["prompt"])


def _failing_after(tokens: int) -> Any:
    async def emit(self: EchoEngine, request: GenerationRequest, generation: Generation, index: int) -> FinishReason:
        for _ in range(tokens):
            generation.completion_tokens += 1
            generation.push(index, "partial ")
        raise EngineError("The embedded engine failed while generating. Retry the request.")

    return emit


@pytest.mark.slow
def test_an_error_event_mid_stream_is_shown_under_the_partial_answer(
    browser: WebDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(EchoEngine, "_emit", _failing_after(2))
    with live_server(echo_settings(context_window=1024)) as server:
        open_playground(browser, server.url)
        wait_for(browser, lambda b: models_listed(b) == [ECHO_ALIAS])
        send(browser, "hello")
        failure = wait_for(browser, lambda b: answers(b)[-1].find_elements(By.CLASS_NAME, "failure"))[0].text

        assert answer_text(browser) == "partial partial "
    assert failure.startswith("The embedded engine failed while generating. Retry the request. (engine_error")
    assert re.search(r"request req_\w+\)$", failure)


@pytest.mark.slow
def test_with_auth_on_a_wrong_key_shows_the_401_and_the_right_key_chats(browser: WebDriver) -> None:
    admin_key = new_key().plaintext
    with live_server(auth_settings(admin_key=admin_key, context_window=1024)) as server:
        with httpx.Client(base_url=server.url) as http:
            created = http.post(
                "/v1/admin/keys",
                json={"project": "default", "scopes": ["models:read", "inference"]},
                headers=bearer(admin_key),
            )
        key = created.json()["value"]
        open_playground(browser, server.url)
        without_key = wait_for(browser, status)

        paste_key(browser, "pk-key_wrong-notakey")
        wrong_key = wait_for(browser, lambda b: "invalid_api_key" in status(b) and status(b))
        send(browser, "hello")
        refused = wait_for(browser, lambda b: answers(b)[-1].find_elements(By.CLASS_NAME, "failure"))[0].text

        paste_key(browser, key)
        wait_for(browser, lambda b: models_listed(b) == [ECHO_ALIAS])
        browser.refresh()  # the key is kept for the tab's session
        wait_for(browser, lambda b: models_listed(b) == [ECHO_ALIAS])
        send(browser, "hello with the right key")
        usage_of_last_answer(browser)
        answered = answer_text(browser)
        shown_status = status(browser)

    assert "No API key was sent" in without_key and "(missing_api_key" in without_key
    assert "The API key is not valid" in wrong_key
    assert refused.startswith("The API key is not valid.") and "(invalid_api_key · request req_" in refused
    assert answered == "hello with the right key" and shown_status == ""
