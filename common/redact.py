"""The one place that keeps secrets out of what the project writes: manifests, config dumps, W&B configs, logs.

A secret is (a) the value of an environment variable whose name looks secret (KEY, TOKEN, SECRET, PASSWORD, ...
anywhere in the name, any case: WANDB_API_KEY, AWS_SECRET_ACCESS_KEY, GITHUB_TOKEN), wherever that value
appears in text, or (b) on a command line, the value of an option or `NAME=VALUE` argument whose name looks
secret. Secrets are replaced by REDACTED before anything is written. Keys of written mappings are not matched
by name: they are often data (a class folder named "keyboard"), and the configs we write have fixed schemas
with no secret fields.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

REDACTED = "REDACTED"  # plain letters: redacted names (a W&B project, tags) stay valid
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|AUTH", re.IGNORECASE)
# Shorter environment values are not searched for in text: replacing every "1234" would garble numbers.
MIN_SECRET_LENGTH = 8
_OPTION = re.compile(r"^(-{0,2}[^=\s]+)=(.*)$", re.DOTALL)


def is_secret_name(name: str) -> bool:
    """Whether a variable, key or option name looks like it holds a secret."""
    return bool(SECRET_NAME.search(name))


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of the environment variables whose names look secret, longest first."""
    environ = os.environ if environ is None else environ
    values = {value for name, value in environ.items() if is_secret_name(name) and len(value) >= MIN_SECRET_LENGTH}
    return sorted(values, key=len, reverse=True)


def redact_text(text: str, secrets: Sequence[str] | None = None) -> str:
    """`text` with every secret environment value in it replaced by REDACTED."""
    for secret in secret_values() if secrets is None else secrets:
        text = text.replace(secret, REDACTED)
    return text


def redact(data: Any, secrets: Sequence[str] | None = None) -> Any:
    """A copy of nested dicts, lists and strings with every secret environment value inside a string (keys
    included) replaced. Other values are returned as they are."""
    secrets = secret_values() if secrets is None else secrets
    if not secrets:
        return data
    if isinstance(data, str):
        return redact_text(data, secrets)
    if isinstance(data, Mapping):
        return {redact(key, secrets): redact(value, secrets) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(redact(item, secrets) for item in data)
    return data


def redact_argv(argv: Sequence[str], secrets: Sequence[str] | None = None) -> list[str]:
    """A command line with secrets replaced: `NAME=VALUE` and `--name=VALUE` with a secret-looking name, the
    argument after a secret-looking `--option`, and secret environment values anywhere."""
    secrets = secret_values() if secrets is None else secrets
    redacted: list[str] = []
    hide_next = False
    for argument in argv:
        option = _OPTION.match(argument)
        if hide_next and not argument.startswith("-"):
            redacted.append(REDACTED)
        elif option and is_secret_name(option.group(1)):
            redacted.append(f"{option.group(1)}={REDACTED}")
        else:
            redacted.append(redact_text(argument, secrets))
        hide_next = argument.startswith("--") and option is None and is_secret_name(argument)
    return redacted


@contextlib.contextmanager
def redacted_sys_argv() -> Iterator[None]:
    """Replace sys.argv by its redacted form for the duration of the block (for libraries that record it, W&B)."""
    original = sys.argv
    sys.argv = redact_argv(original)
    try:
        yield
    finally:
        sys.argv = original
