"""The key format and its keyed hash."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from portico.auth.keys import hash_secret, load_or_create_server_secret, new_key, parse_key, secret_matches


def test_a_new_key_parses_back_to_its_parts() -> None:
    parts = new_key()
    text = parts.plaintext
    assert text.startswith("pk-key_")
    assert parse_key(text) == parts
    assert new_key().secret != parts.secret


def test_malformed_keys_do_not_parse() -> None:
    good = new_key().plaintext
    for bad in ["", "pk-", good + "0", good[:-1], good.replace("pk-", "sk-"), good.upper(), f"{good}\n", " " + good]:
        assert parse_key(bad) is None, bad


def test_the_hash_is_keyed_by_the_server_secret() -> None:
    secret = new_key().secret
    stored = hash_secret(b"server-a", secret)
    assert secret_matches(b"server-a", secret, stored)
    assert not secret_matches(b"server-b", secret, stored)
    assert not secret_matches(b"server-a", new_key().secret, stored)
    assert not secret_matches(b"server-a", secret, None)


def _load(path: str, results: multiprocessing.Queue[bytes]) -> None:
    results.put(load_or_create_server_secret(Path(path)))


def test_concurrent_processes_agree_on_one_server_secret(tmp_path: Path) -> None:
    path = tmp_path / "data" / "hmac.secret"
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[bytes] = context.Queue()
    processes = [context.Process(target=_load, args=(str(path), results)) for _ in range(4)]
    for process in processes:
        process.start()
    secrets = {results.get(timeout=30) for _ in processes}
    for process in processes:
        process.join()
    assert len(secrets) == 1 and len(secrets.pop()) == 32
    assert path.stat().st_mode & 0o777 == 0o600
