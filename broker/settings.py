"""Broker settings: one frozen object, loaded once at start from a TOML file and the environment.

Invariants:
- Every field has its unit in its name (`_bytes`, `_seconds`, `_per_minute`) and is checked when
  loaded; a bad value is a `ConfigError` naming the setting, raised before anything is served.
- The file is a flat TOML table of the fields below; an unknown key is refused (a typo must not
  silently fall back to a default). `CASEBRIDGE_<FIELD>` environment variables override the
  file (e.g. `CASEBRIDGE_LISTEN_PORT=9000`); lists of paths in the environment are separated by
  the platform's path separator.
- Relative paths in the file are relative to the file's directory; in the environment, to the
  working directory. Paths are made absolute when loaded.
- Settings hold no secret: the keystore passphrase is read from the variable `passphrase_env`
  names, at start, and never stored here.
- Witnesses are `"<vkey> <url>"` entries (a tlog-cosignature verifier key, type 0x04, and the
  witness's submission URL); in the environment they are separated by `;`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from protocol.certificate import AGENCY_ID
from protocol.envelope import MAX_RECIPIENTS
from protocol.errors import CaseBridgeError, ConfigError
from protocol.note import SIG_COSIGNATURE_V1, VerifierKey

ENV_PREFIX = "CASEBRIDGE_"
DEFAULT_PORT = 8443
DAY_SECONDS = 86400
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
CONFIG_FILE_NAME = "broker.toml"
MAX_WITNESSES = 16
LOG_ORIGIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,127}(?:/[A-Za-z0-9._~-]{1,64}){0,8}")
WITNESS_URL = re.compile(r"https?://[A-Za-z0-9.\[\]:-]+(?:/[A-Za-z0-9._~%/-]*)?")


@dataclass(frozen=True, slots=True)
class Witness:
    """A witness the broker submits checkpoints to (c2sp.org/tlog-witness) and whose
    cosignatures it publishes: `url` is the submission prefix (`<url>/add-checkpoint`)."""

    vkey: VerifierKey
    url: str

    @property
    def name(self) -> str:
        return self.vkey.name

    def entry(self) -> str:
        return f"{self.vkey.encode()} {self.url}"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the broker is configured with. Build with `load_settings` or `from_values`."""

    broker_id: str
    data_dir: Path
    root_cert_files: tuple[Path, ...]
    keystore_file: Path
    passphrase_env: str = "CASEBRIDGE_BROKER_PASSPHRASE"  # noqa: S105 - a variable's name, not a secret
    listen_host: str = "127.0.0.1"
    listen_port: int = DEFAULT_PORT
    public_authority: str = ""
    """The `@authority` clients sign (host:port as they reach the broker, e.g. behind a proxy).
    Empty means `listen_host:listen_port`."""
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    max_envelope_bytes: int = 512 << 20
    max_part_bytes: int = 256 << 20
    max_recipients: int = 16
    max_request_body_bytes: int = 1 << 20
    inline_part_max_bytes: int = 64 << 10
    """Parts up to this size are kept in the database, in the acceptance transaction; larger
    parts go to files in `data_dir/blobs`."""
    ttl_seconds: int = 14 * DAY_SECONDS
    retention_interval_seconds: int = 60
    rate_limit_per_minute: int = 6000
    rate_limit_burst: int = 200
    request_timeout_seconds: int = 30
    clock_skew_seconds: int = 300
    shutdown_timeout_seconds: int = 30
    log_level: str = "INFO"
    log_origin: str = ""
    """The audit log's checkpoint origin (and note key name). Empty means
    `casebridge.<broker id in lower case>/audit`."""
    checkpoint_interval_seconds: int = 2
    """How soon a checkpoint covers new audit entries."""
    checkpoint_idle_seconds: int = 3600
    """How often a checkpoint is signed (and witnessed) when nothing was appended."""
    witnesses: tuple[Witness, ...] = ()
    witness_timeout_seconds: int = 10
    database_url: str = ""
    """PostgreSQL (`postgresql://user@host:port/database`), which several replicas may share;
    empty means SQLite in `data_dir`. It holds no password: libpq's PGPASSWORD or password file
    (PGPASSFILE, ~/.pgpass) gives it."""
    database_owner_url: str = ""
    """The schema owner's connection, used only at start to apply migrations (the broker's own
    role may not change the schema); empty means `database_url` applies them."""
    database_max_connections: int = 10

    @property
    def authority(self) -> str:
        return self.public_authority or f"{self.listen_host}:{self.listen_port}"

    @property
    def audit_origin(self) -> str:
        return self.log_origin or f"casebridge.{self.broker_id.lower()}/audit"

    @property
    def database_file(self) -> Path:
        return self.data_dir / "broker.sqlite3"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert_file is not None else "http"


_INT_BOUNDS: dict[str, tuple[int, int]] = {
    "listen_port": (0, 65535),
    "max_envelope_bytes": (1024, 1 << 40),
    "max_part_bytes": (256, 1 << 40),
    "max_recipients": (1, MAX_RECIPIENTS),
    "max_request_body_bytes": (4096, 64 << 20),
    "inline_part_max_bytes": (0, 16 << 20),
    "ttl_seconds": (60, 90 * DAY_SECONDS),
    "retention_interval_seconds": (1, DAY_SECONDS),
    "rate_limit_per_minute": (1, 10_000_000),
    "rate_limit_burst": (1, 1_000_000),
    "request_timeout_seconds": (1, 3600),
    "clock_skew_seconds": (10, 3600),
    "shutdown_timeout_seconds": (0, 3600),
    "checkpoint_interval_seconds": (1, 3600),
    "checkpoint_idle_seconds": (10, 7 * DAY_SECONDS),
    "witness_timeout_seconds": (1, 300),
    "database_max_connections": (2, 1000),
}
_PATHS = ("data_dir", "keystore_file")
_OPTIONAL_PATHS = ("tls_cert_file", "tls_key_file")
_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _bad(name: str, expected: str) -> ConfigError:
    return ConfigError(
        f"setting '{name}': expected {expected}. Correct it in the file or {ENV_PREFIX}{name.upper()}."
    )


def _path(name: str, value: object, base: Path) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise _bad(name, "a path")
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p).absolute()


def _int(name: str, value: object) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip().replace("_", ""))
        except ValueError:
            raise _bad(name, "a whole number") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(name, "a whole number")
    lo, hi = _INT_BOUNDS[name]
    if not lo <= value <= hi:
        raise _bad(name, f"a whole number from {lo} to {hi}")
    return value


def _witness(value: object) -> Witness:
    expected = "entries '<vkey> <url>': a cosignature (type 0x04) vkey and an http(s) URL"
    if not isinstance(value, str) or len(value.split()) != 2:
        raise _bad("witnesses", expected)
    vkey_text, url = value.split()
    try:
        vkey = VerifierKey.parse(vkey_text)
    except CaseBridgeError:
        raise _bad("witnesses", expected) from None
    if vkey.sig_type != SIG_COSIGNATURE_V1 or not WITNESS_URL.fullmatch(url):
        raise _bad("witnesses", expected)
    return Witness(vkey, url.rstrip("/"))


def _witnesses(value: object) -> tuple[Witness, ...]:
    if isinstance(value, str):
        value = [v for v in value.split(";") if v.strip()]
    if not isinstance(value, list) or len(value) > MAX_WITNESSES:
        raise _bad("witnesses", f"a list of at most {MAX_WITNESSES} '<vkey> <url>' entries")
    found = tuple(_witness(v) for v in value)
    if len({w.name for w in found}) != len(found):
        raise _bad("witnesses", "witnesses with different names")
    return found


def _convert(name: str, value: object, base: Path) -> object:
    if name == "witnesses":
        return _witnesses(value)
    if name in _INT_BOUNDS:
        return _int(name, value)
    if name in _PATHS:
        return _path(name, value, base)
    if name in _OPTIONAL_PATHS:
        return None if value in ("", None) else _path(name, value, base)
    if name == "root_cert_files":
        if isinstance(value, str):
            value = [v for v in value.split(os.pathsep) if v]
        if not isinstance(value, list) or not value:
            raise _bad(name, "a list of one or more root certificate files")
        return tuple(_path(name, v, base) for v in value)
    if not isinstance(value, str):
        raise _bad(name, "text")
    return value.strip()


def _database_url(name: str, value: object) -> None:
    expected = "a postgresql://user@host[:port]/database URL with no password (use PGPASSWORD or ~/.pgpass)"
    if not isinstance(value, str):
        raise _bad(name, expected)
    try:
        url = urlsplit(value)
        has_password = url.password is not None
        url.port  # noqa: B018 - parsing the port is the check: a bad one raises ValueError
    except ValueError:
        raise _bad(name, expected) from None
    if url.scheme not in ("postgresql", "postgres") or not url.path.strip("/") or has_password:
        raise _bad(name, expected)


def _check(values: dict[str, object]) -> None:
    if not isinstance(values["broker_id"], str) or not AGENCY_ID.fullmatch(values["broker_id"]):
        raise _bad("broker_id", "a broker id such as TH-CASEBRIDGE")
    if not ENV_NAME.fullmatch(str(values.get("passphrase_env", _FIELDS["passphrase_env"].default))):
        raise _bad("passphrase_env", "the NAME of an environment variable, never the passphrase itself")
    if (values.get("tls_cert_file") is None) != (values.get("tls_key_file") is None):
        raise _bad("tls_cert_file", "tls_cert_file and tls_key_file set together, or neither")
    level = str(values.get("log_level", "INFO")).upper()
    if level not in LOG_LEVELS:
        raise _bad("log_level", f"one of {', '.join(LOG_LEVELS)}")
    values["log_level"] = level
    host = values.get("listen_host", "127.0.0.1")
    if not isinstance(host, str) or not host or any(c.isspace() for c in host):
        raise _bad("listen_host", "a host name or address such as 127.0.0.1")
    if host in ("0.0.0.0", "::") and not values.get("public_authority"):  # noqa: S104 - checking, not binding
        raise _bad("public_authority", "the host[:port] clients sign, when listening on every interface")
    part = values.get("max_part_bytes", _FIELDS["max_part_bytes"].default)
    envelope = values.get("max_envelope_bytes", _FIELDS["max_envelope_bytes"].default)
    if isinstance(part, int) and isinstance(envelope, int) and part > envelope:
        raise _bad("max_part_bytes", "at most max_envelope_bytes")
    for name in ("database_url", "database_owner_url"):
        if values.get(name):
            _database_url(name, values[name])
    if values.get("database_owner_url") and not values.get("database_url"):
        raise _bad("database_owner_url", "empty unless database_url is set")
    origin = values.get("log_origin", "")
    if origin and not (isinstance(origin, str) and LOG_ORIGIN.fullmatch(origin)):
        raise _bad("log_origin", "a schema-less URL such as casebridge.th-casebridge/audit")
    interval = values.get("checkpoint_interval_seconds", _FIELDS["checkpoint_interval_seconds"].default)
    idle = values.get("checkpoint_idle_seconds", _FIELDS["checkpoint_idle_seconds"].default)
    if isinstance(interval, int) and isinstance(idle, int) and interval > idle:
        raise _bad("checkpoint_interval_seconds", "at most checkpoint_idle_seconds")


def from_values(file_values: Mapping[str, object], *, base_dir: Path, environ: Mapping[str, str]) -> Settings:
    """Build settings from a file's table (relative to `base_dir`) and environment overrides."""
    unknown = sorted(set(file_values) - set(_FIELDS))
    if unknown:
        raise ConfigError(
            f"unknown setting '{unknown[0]}'. Check its spelling against docs/operating-broker.md."
        )
    values: dict[str, object] = {k: _convert(k, v, base_dir) for k, v in file_values.items()}
    cwd = Path.cwd()
    for name in _FIELDS:
        env_value = environ.get(ENV_PREFIX + name.upper())
        if env_value is not None:
            values[name] = _convert(name, env_value, cwd)
    for name in ("broker_id", "data_dir", "root_cert_files"):
        if name not in values:
            raise _bad(name, "a value (it has no default)")
    if "keystore_file" not in values:
        values["keystore_file"] = Path(str(values["data_dir"])) / "broker.cbks"
    _check(values)
    return Settings(**values)  # type: ignore[arg-type]


def load_settings(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file at `path`, apply `CASEBRIDGE_*` overrides, check every value."""
    p = Path(path).absolute()
    try:
        with p.open("rb") as f:
            table = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(
            f"no configuration file at {p}. Run `casebridge broker init` or give --config."
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot read {p}: {e.strerror}.") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p} is not valid TOML: {e}.") from None
    return from_values(table, base_dir=p.parent, environ=os.environ if environ is None else environ)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        raise TypeError("no boolean settings")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, Witness):
        return _toml_value(value.entry())
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__}")


def to_toml(values: Mapping[str, object]) -> str:
    """A settings file holding `values` (paths as given, so relative ones stay relative)."""
    lines = ["# CaseBridge broker settings; every field is described in docs/operating-broker.md."]
    for name in _FIELDS:
        value = values.get(name)
        if value is not None:
            lines.append(f"{name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"
