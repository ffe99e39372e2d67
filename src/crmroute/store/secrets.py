"""Encryption of stored secrets (CRM passwords, tokens, custom header values).

The key is ``CRMROUTE_SECRET_KEY`` when set, else ``secret.key`` in the data
dir, generated on first run with mode 0600. Values are Fernet tokens
(AES-128-CBC + HMAC-SHA256), so a copied database is useless without the key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from crmroute.errors import ConfigError
from crmroute.settings import Settings

MASK = "********"
KEY_FILE = "secret.key"


class SecretBox:
    def __init__(self, key: str | bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError):
            raise ConfigError(
                "must be a Fernet key (32 url-safe base64-encoded bytes)", field="CRMROUTE_SECRET_KEY"
            ) from None

    @classmethod
    def from_settings(cls, settings: Settings) -> "SecretBox":
        if settings.secret_key:
            return cls(settings.secret_key)
        return cls(load_or_create_key(settings.ensure_data_dir() / KEY_FILE))

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    def encrypt(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode() if value else ""

    def decrypt(self, token: str) -> str:
        if not token:
            return ""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ConfigError(
                "a stored secret cannot be decrypted: the secret key changed", field="CRMROUTE_SECRET_KEY"
            ) from None

    def encrypt_json(self, value: Any) -> str:
        return self.encrypt(json.dumps(value)) if value else ""

    def decrypt_json(self, token: str, default: Any) -> Any:
        return json.loads(self.decrypt(token)) if token else default


def load_or_create_key(path: Path) -> bytes:
    """Read the key file, creating it (0600, never overwritten) when missing."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key + b"\n")
    return key
