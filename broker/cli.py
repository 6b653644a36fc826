"""`casebridge broker ...`: what a broker operator runs.

- `init`: a data directory with its settings file, the pinned roots, the broker keystore
  (receipt and checkpoint keys) and a certification request for the receipt key;
- `import-cert`: store the certificate the national authority issued (role broker);
- `serve`: run the broker (prints the listening URL on one line once serving);
- `register-certificate`, `register-revocations`: offline operator registration;
- `status`: counts of agencies, stored envelopes, open inbox entries, audit entries;
- `show-keys` (or `keys`): the receipt key and its certificate, and the audit checkpoint
  verifier key (vkey) that officers and witnesses pin, with their read-aloud fingerprints.

Passphrases come from the variable named by `passphrase_env` in the settings (default
CASEBRIDGE_BROKER_PASSPHRASE) or a prompt, never from the command line.

Start-up stays quick: this module imports only what parsing needs; each command imports the
service, storage and key modules it uses when it runs (`casebridge --help` never loads aiohttp).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from broker.clock import SystemClock
from broker.settings import CONFIG_FILE_NAME, Settings, from_values, load_settings, to_toml
from keys import lifecycle
from keys.files import PUBLIC_MODE, read_bytes, write_atomic
from keys.fingerprint import fingerprint, key_id_hex
from keys.identity import BrokerIdentity
from keys.keystore import KDF_PROFILES, KeystoreKind, load_broker, peek_kind, save_identity
from keys.passphrase import read_passphrase
from protocol.certificate import AgencyCertificate, RootCertificate, TrustStore
from protocol.errors import CaseBridgeError, Conflict, InvalidField
from protocol.note import NoteSigner

if TYPE_CHECKING:
    from broker.admin import Registered
    from broker.storage.interfaces import Store
    from broker.storage.records import StoreCounts

T = TypeVar("T")
DEFAULT_PASSPHRASE_ENV = "CASEBRIDGE_BROKER_PASSPHRASE"  # noqa: S105 - a variable's name, not a secret


def _now() -> int:
    return int(time.time())


def _run(coroutine: Callable[[], Awaitable[T]]) -> T:
    import asyncio

    async def main() -> T:
        return await coroutine()

    return asyncio.run(main())


def _passphrase(settings_env: str, what: str, *, new: bool = False) -> str:
    return read_passphrase(None, settings_env, what=what, new=new)


def _unlock(settings: Settings) -> tuple[BrokerIdentity, str]:
    peek_kind(settings.keystore_file, KeystoreKind.BROKER)
    passphrase = _passphrase(settings.passphrase_env, f"the broker keystore {settings.keystore_file}")
    return load_broker(settings.keystore_file, passphrase).identity, passphrase


# --- init and certificate ----------------------------------------------------------------------


def init(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).absolute()
    config = data_dir / CONFIG_FILE_NAME
    keystore = data_dir / "broker.cbks"
    request_file = data_dir / "broker.csr"
    if not args.force and any(p.exists() for p in (config, keystore, request_file)):
        raise Conflict(f"{data_dir} already holds a broker; choose another directory or pass --force.")
    roots = [RootCertificate.parse(read_bytes(path)) for path in args.root_cert]
    if len({r.country for r in roots}) != len(roots):
        raise InvalidField("--root-cert", "one root certificate per country")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (data_dir / "roots").mkdir(exist_ok=True, mode=0o755)
    root_files = []
    for source, root in zip(args.root_cert, roots, strict=True):
        target = data_dir / "roots" / f"{root.country.lower()}-root.cert"
        shutil.copyfile(source, target)
        root_files.append(str(target.relative_to(data_dir)))
    values: dict[str, object] = {
        "broker_id": args.id,
        "data_dir": ".",
        "root_cert_files": root_files,
        "keystore_file": keystore.name,
        "passphrase_env": args.passphrase_env,
        "listen_host": args.listen_host,
        "listen_port": args.listen_port,
    }
    if args.public_authority:
        values["public_authority"] = args.public_authority
    from_values(values, base_dir=data_dir, environ={})
    broker = lifecycle.create_broker(args.id, args.name)
    passphrase = _passphrase(args.passphrase_env, f"the new broker keystore {keystore}", new=True)
    save_identity(keystore, broker, passphrase, KDF_PROFILES[args.kdf_profile], overwrite=args.force)
    write_atomic(request_file, lifecycle.broker_request(broker), mode=PUBLIC_MODE, overwrite=args.force)
    config.write_text(to_toml(values), encoding="utf-8")
    print(
        "\n".join(
            [
                f"wrote {config}, {keystore} and the certification request {request_file}",
                f"receipt key fingerprint:    {fingerprint(broker.public_key)}",
                f"checkpoint key fingerprint: {fingerprint(broker.checkpoint_public_key)}",
                "next: have the national authority certify the request with the broker role:",
                f"  casebridge keys certify --root ROOT.cbks --request {request_file} --role broker "
                "--out broker.cert",
                f"then: casebridge broker import-cert --config {config} --cert broker.cert",
            ]
        )
    )
    return 0


def import_cert(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    cert_bytes = read_bytes(args.cert)
    cert = AgencyCertificate.parse(cert_bytes)
    roots = {r.key_id: r for r in (RootCertificate.parse(read_bytes(p)) for p in settings.root_cert_files)}
    root = roots.get(cert.issuer_key_id)
    if root is None:
        raise InvalidField("--cert", "a certificate issued by one of the broker's configured roots")
    identity, passphrase = _unlock(settings)
    peek = peek_kind(settings.keystore_file, KeystoreKind.BROKER)
    updated = lifecycle.import_broker_certificate(identity, cert_bytes, root, _now())
    save_identity(settings.keystore_file, updated, passphrase, peek.profile, overwrite=True)
    print(f"imported the broker certificate of {cert.agency_id} into {settings.keystore_file}")
    return 0


# --- serving and offline administration ----------------------------------------------------------


def serve(args: argparse.Namespace) -> int:
    import asyncio

    from broker.logs import configure_logging
    from broker.serve import serve as run_broker

    settings = load_settings(args.config)
    configure_logging(settings.log_level)
    identity, _ = _unlock(settings)
    asyncio.run(run_broker(settings, identity, SystemClock(), announce=lambda url: print(url, flush=True)))
    return 0


Registration = Callable[["Settings", "Store", bytes, int], Awaitable["Registered"]]


def _register(args: argparse.Namespace, action: Registration) -> int:
    from broker import admin

    settings = load_settings(args.config)
    data = read_bytes(args.file)
    now = _now()

    async def work() -> Registered:
        async with admin.opened_store(settings, now) as store:
            return await action(settings, store, data, now)

    registered = _run(work)
    print(f"{'registered' if registered.created else 'already registered'}: {registered.what}")
    return 0


def register_certificate(args: argparse.Namespace) -> int:
    from broker import admin

    return _register(args, admin.register_certificate)


def register_revocations(args: argparse.Namespace) -> int:
    from broker import admin

    return _register(args, admin.register_revocations)


def status(args: argparse.Namespace) -> int:
    from broker import admin

    settings = load_settings(args.config)

    async def work() -> StoreCounts:
        async with admin.opened_store(settings, _now()) as store:
            return await admin.status(store)

    counts = _run(work)
    print(f"broker:                {settings.broker_id}")
    print(f"agencies:              {counts.agencies} ({counts.certificates} certificates)")
    print(f"envelopes stored:      {counts.envelopes_stored}")
    print(f"pending inbox entries: {counts.open_inbox_entries}")
    print(f"audit log entries:     {counts.audit_entries}")
    return 0


# --- the keys to hand out -------------------------------------------------------------------------


def _certificate_check(settings: Settings, cert: AgencyCertificate, now: int) -> str:
    """Whether a configured root vouches for the certificate now, in words (never raises)."""
    roots = [RootCertificate.parse(read_bytes(p)) for p in settings.root_cert_files]
    try:
        TrustStore(roots).verify_agency(cert, now)
    except CaseBridgeError as e:
        return f"NOT valid now ({e.reason}): the broker will not start with it"
    return f"verified against the configured root of {cert.country}, valid now"


def show_keys(args: argparse.Namespace) -> int:
    """Print what the operator hands out: the receipt key (certified) and the checkpoint vkey."""
    from keys.describe import when

    settings = load_settings(args.config)
    identity, _ = _unlock(settings)
    vkey = NoteSigner(settings.audit_origin, identity.checkpoint_key).vkey
    cert = identity.certificate
    document: dict[str, Any] = {
        "broker_id": identity.broker_id,
        "receipt_key_id": key_id_hex(identity.public_key),
        "receipt_key_fingerprint": fingerprint(identity.public_key),
        "certificate": None,
        "log_origin": vkey.name,
        "checkpoint_vkey": vkey.encode(),
        "checkpoint_key_fingerprint": fingerprint(identity.checkpoint_public_key),
    }
    if cert is not None:
        document["certificate"] = {
            "agency_id": cert.agency_id,
            "name": cert.name,
            "roles": [str(r) for r in cert.roles],
            "serial": cert.serial,
            "issuer": f"root of {cert.country}, key id {cert.issuer_key_id.hex()}",
            "not_before": cert.not_before,
            "not_after": cert.not_after,
            "check": _certificate_check(settings, cert, _now()),
        }
    if args.json:
        print(json.dumps(document, ensure_ascii=False, sort_keys=True))
        return 0
    lines = [
        f"broker:                     {identity.broker_id}",
        f"receipt key id:             {document['receipt_key_id']}",
        f"receipt key fingerprint:    {document['receipt_key_fingerprint']}",
    ]
    if cert is None:
        lines.append("certificate:                none imported yet (casebridge broker import-cert)")
    else:
        c = document["certificate"]
        lines += [
            f"certificate:                {cert.agency_id} ({', '.join(c['roles'])}), serial {cert.serial}",
            f"  name:                     {cert.name}",
            f"  issuer:                   {c['issuer']}",
            f"  valid:                    {when(cert.not_before)} to {when(cert.not_after)}",
            f"  check:                    {c['check']}",
        ]
    lines += [
        f"audit log origin:           {vkey.name}",
        f"checkpoint vkey:            {vkey.encode()}",
        f"checkpoint key fingerprint: {document['checkpoint_key_fingerprint']}",
        "Give the vkey to security officers and witness operators out of band, and read the "
        "fingerprint aloud with it.",
    ]
    print("\n".join(lines))
    return 0


# --- argument parsing -----------------------------------------------------------------------------


def _command(
    sub: argparse._SubParsersAction[Any], name: str, run: Callable[[argparse.Namespace], int], text: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=text, description=text, allow_abbrev=False)
    parser.set_defaults(run=run)
    return parser


def _config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help=f"the broker's settings file ({CONFIG_FILE_NAME})")


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add this package's subcommands to the `casebridge` command."""
    group = sub.add_parser("broker", help="Run and administer a CaseBridge broker.", allow_abbrev=False)
    commands = group.add_subparsers(dest="broker_command", required=True, metavar="COMMAND")

    p = _command(
        commands, "init", init, "Create a broker data directory, keystore and certification request."
    )
    p.add_argument("--data-dir", required=True)
    p.add_argument("--id", required=True, help="broker id, such as TH-CASEBRIDGE")
    p.add_argument("--name", default="CaseBridge broker")
    p.add_argument("--root-cert", required=True, action="append", help="a national root to trust (repeat)")
    p.add_argument("--listen-host", default="127.0.0.1")
    p.add_argument("--listen-port", type=int, default=8443)
    p.add_argument("--public-authority", help="host[:port] clients use, if not the listening address")
    p.add_argument("--passphrase-env", default=DEFAULT_PASSPHRASE_ENV, metavar="NAME")
    p.add_argument("--kdf-profile", choices=sorted(KDF_PROFILES), default="moderate")
    p.add_argument("--force", action="store_true", help="replace an existing broker in the directory")

    p = _command(
        commands, "import-cert", import_cert, "Store the broker certificate the national authority issued."
    )
    _config(p)
    p.add_argument("--cert", required=True)

    p = _command(
        commands, "serve", serve, "Run the broker until SIGTERM; prints the listening URL once serving."
    )
    _config(p)

    p = _command(commands, "register-certificate", register_certificate, "Register a certificate (offline).")
    _config(p)
    p.add_argument("file")

    p = _command(
        commands, "register-revocations", register_revocations, "Register a revocation list (offline)."
    )
    _config(p)
    p.add_argument("file")

    p = _command(commands, "status", status, "Show counts: agencies, stored envelopes, audit entries.")
    _config(p)

    text = "Show the receipt key, its certificate and the audit checkpoint vkey to hand out."
    p = commands.add_parser("show-keys", aliases=["keys"], help=text, description=text, allow_abbrev=False)
    p.set_defaults(run=show_keys)
    _config(p)
    p.add_argument("--json", action="store_true", help="print one JSON document")
