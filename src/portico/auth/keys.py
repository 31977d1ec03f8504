"""The key format ``pk-<key id>-<secret>`` and its keyed hash.

Only HMAC-SHA256(server secret, secret) is stored. Without the server secret a leaked database does not let
anyone test guesses offline; comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from portico.constants import API_KEY_PREFIX, PREFIX_KEY, new_id

_KEY_PATTERN = re.compile(rf"{API_KEY_PREFIX}({PREFIX_KEY}[0-9a-f]{{24}})-([0-9a-f]{{64}})")


@dataclass(frozen=True, slots=True)
class KeyParts:
    key_id: str
    secret: str

    @property
    def plaintext(self) -> str:
        return f"{API_KEY_PREFIX}{self.key_id}-{self.secret}"


def new_key(key_id: str | None = None) -> KeyParts:
    """A fresh key (or a fresh secret for ``key_id``): 256 random bits of secret."""
    return KeyParts(key_id or new_id(PREFIX_KEY), secrets.token_hex(32))


def parse_key(text: str) -> KeyParts | None:
    match = _KEY_PATTERN.fullmatch(text)
    return KeyParts(match[1], match[2]) if match else None


def hash_secret(server_secret: bytes, secret: str) -> str:
    return hmac.new(server_secret, secret.encode("ascii"), hashlib.sha256).hexdigest()


def secret_matches(server_secret: bytes, secret: str, stored_hash: str | None) -> bool:
    if stored_hash is None:
        return False
    return hmac.compare_digest(hash_secret(server_secret, secret), stored_hash)


def load_or_create_server_secret(path: Path) -> bytes:
    """The server secret kept in ``path``, created once (owner-only) by whichever process comes first."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        draft.write_text(secrets.token_hex(32))
        draft.chmod(stat.S_IRUSR | stat.S_IWUSR)
        try:
            os.link(draft, path)  # atomic: the file appears complete, and only the first link wins
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return bytes.fromhex(path.read_text().strip())
