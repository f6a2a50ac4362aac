"""The one redaction function: what reaches a registry tag, a model card, an artifact, a log
line or a printed command goes through `redact` first.

Two kinds of secret: credentials inside URLs (`https://user:TOKEN@host/repo.git`, a tracking
URI with `user:pass@`, a bare token as the user of an http(s) URL) and the values of
environment variables that hold secrets (by name: the known ones, and any *_TOKEN,
*_PASSWORD, *_SECRET..., *_API_KEY, *_AUTH_STRING). Hand-written (a regex, not a library):
the standard library's urllib.parse only handles a string that is one URL, and these are
embedded in free text.
"""

from __future__ import annotations

import os
import re
from typing import Any

MASK = "***"
SECRET_VARS = frozenset({
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_URI", "PREFECT_API_KEY", "PREFECT_API_AUTH_STRING",
    "PREFECT_SERVER_API_AUTH_STRING", "RAY_AUTH_TOKEN", "GITHUB_TOKEN", "HF_TOKEN",
})
SECRET_NAME = re.compile(r"(TOKEN|PASSWORD|PASSWD|SECRET|API_KEY|AUTH_STRING|CREDENTIALS?)(_|$)")
MIN_SECRET_LEN = 6  # shorter values ("1", "true") would mask ordinary words
# scheme://userinfo@ : userinfo is everything up to the last '@' before the host
URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][\w+.-]*://)(?P<user>[^\s/@:]*)(?P<password>:[^\s/@]*)?@")


def _url(match: re.Match) -> str:
    if match["password"]:
        return f"{match['scheme']}{match['user']}:{MASK}@"
    if match["scheme"].lower().startswith("http"):  # https://TOKEN@host: the user is the token
        return f"{match['scheme']}{MASK}@"
    return match[0]  # ssh://git@host: a user name, no secret


def secret_values(env: dict[str, str] | None = None) -> list[str]:
    """The values of the secret variables set in `env` (default: this process's), longest first."""
    env = os.environ if env is None else env
    values = set()
    for name, value in env.items():
        if (name in SECRET_VARS or SECRET_NAME.search(name.upper())) and len(value) >= MIN_SECRET_LEN:
            values.add(value)
            # a URI-valued one (MLFLOW_TRACKING_URI) is only secret for its userinfo: masked below
            if "://" in value:
                values.discard(value)
                match = URL_USERINFO.search(value)
                if match and match["password"] and len(match["password"]) > MIN_SECRET_LEN:
                    values.add(match["password"][1:])
    return sorted(values, key=len, reverse=True)


def redact(value: Any, env: dict[str, str] | None = None) -> Any:
    """`value` with URL credentials and secret variables' values replaced by ***; strings, and
    the strings inside lists and dicts (keys too), other values unchanged."""
    if isinstance(value, dict):
        return {redact(k, env): redact(v, env) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(v, env) for v in value)
    if not isinstance(value, str):
        return value
    text = URL_USERINFO.sub(_url, value)
    for secret in secret_values(env):
        text = text.replace(secret, MASK)
    return text
