"""Where the keys commands get passphrases from: a terminal prompt or an environment variable.

Never from a command-line argument: argv is visible to every user of the machine (`ps`) and
lands in shell history. The commands take only `--passphrase-env NAME`, the *name* of a
variable; a value that does not look like a variable name is refused without being echoed,
in case a passphrase was typed there by mistake.

Order: the variable named by `--passphrase-env` (it must be set); else the command's default
variable if set; else a prompt on the terminal (twice when a new passphrase is chosen). With no
terminal and no variable, the command stops with a clear error rather than reading a pipe.
"""

from __future__ import annotations

import getpass
import os
import re
import sys

from protocol.errors import InputError, InvalidField

DEFAULT_ENV = "CASEBRIDGE_PASSPHRASE"
ROOT_ENV = "CASEBRIDGE_ROOT_PASSPHRASE"
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def read_passphrase(
    env_name: str | None,
    default_env: str,
    *,
    what: str,
    new: bool = False,
    option: str = "--passphrase-env",
) -> str:
    """The passphrase for `what` (e.g. "the root keystore th-root.cbks"); `env_name` is the
    value given to `option`, if any."""
    if env_name is not None:
        if not ENV_NAME.fullmatch(env_name):
            raise InvalidField(
                option,
                "the NAME of an environment variable holding the passphrase, never the passphrase itself",
            )
        value = os.environ.get(env_name)
        if value is None:
            raise InvalidField(option, f"a variable that is set; {env_name} is not")
        return value
    value = os.environ.get(default_env)
    if value is not None:
        return value
    if not sys.stdin.isatty():
        raise InputError(
            f"no passphrase for {what}: there is no terminal to ask on. "
            f"Set {default_env} or pass {option} NAME."
        )
    try:
        first = getpass.getpass(f"{'New passphrase' if new else 'Passphrase'} for {what}: ")
        if new and getpass.getpass("Same passphrase again: ") != first:
            raise InvalidField("passphrase", "the same passphrase typed twice")
    except EOFError as e:
        raise InputError(f"no passphrase for {what}: input ended.") from e
    return first
