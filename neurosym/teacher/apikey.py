"""Reading the teacher's API key from the environment, and keeping it out of every message."""
from __future__ import annotations

import os
from typing import Optional

from .errors import TeacherConfigError

NO_KEY = "EMPTY"  # sent to keyless servers (vLLM, Ollama, llama.cpp accept any value)


def read_api_key(api_key_env: str) -> str:
    """The key held in ``$api_key_env``; ``api_key_env: ""`` means the server needs no key.

    Raises :class:`TeacherConfigError` naming ``teacher.api_key_env`` when the variable is unset.
    The environment is only read, never written.
    """
    if not api_key_env:
        return NO_KEY
    value = os.environ.get(api_key_env)
    if not value:
        raise TeacherConfigError(
            f"teacher.api_key_env: the environment variable ${api_key_env} is not set; export it with "
            f"your API key (export {api_key_env}=...), point teacher.api_key_env at the variable that "
            "holds it, or set teacher.api_key_env: \"\" for a server that needs no key")
    return value


def redact(text: str, secret: Optional[str]) -> str:
    """``text`` with every occurrence of ``secret`` (and of its long pieces) replaced by ``***``."""
    if not secret or secret == NO_KEY or not text:
        return text
    text = text.replace(secret, "***")
    # Servers often echo a key partially (prefix...suffix); hide any 8+ char run of it too.
    if len(secret) >= 16:
        for size in (12, 8):
            for i in range(0, len(secret) - size + 1):
                piece = secret[i:i + size]
                if piece in text:
                    text = text.replace(piece, "***")
    return text
