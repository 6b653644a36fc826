"""The audit-log verification benchmark: `verify` over a realistic log against bare SHA-256.

    .venv/bin/python -m bench.audit_verify_bench --leaves 1000000
    .venv/bin/python -m bench.audit_verify_bench --leaves 200000 --profile   # cProfile of verify
    .venv/bin/python -m bench.audit_verify_bench --leaves 1000000 --dir /var/tmp --keep

- The log: referrals between twelve agencies of two countries (one to three recipients each),
  every leaf a broker writes for them (`envelope_accepted`, an `accepted` receipt per recipient
  signed by the broker, `delivered` and `verified` (sometimes `rejected`, or `expired` from the
  broker) signed by the recipient, `envelope_purged`), with certificate and encryption-key
  registrations and operator actions now and then. Receipts are signed with real keys. Leaves
  are packed from templates and every 997th is compared with `protocol.auditlog.encode_leaf`, so
  they are byte for byte what the broker writes. The export (`entries`, `hashes`, a checkpoint
  signed with `protocol.note.sign_checkpoint`) is written to a temporary directory and deleted
  after the run unless `--keep`.
- Baseline, in the same run: bare `hashlib` SHA-256 of every leaf (0x00 || leaf) and of every
  inner node of the same tree (0x01 || left || right), leaves already split into memory.
- Measured: `clients.audit.verifier.verify_log` over the export, as `casebridge audit verify
  --from DIR` runs it. Each phase runs in a fresh subprocess, which reports its wall and CPU time
  and its peak resident memory (VmHWM); the verify phase must find the log intact.

Target: verify / bare SHA-256 <= 2, peak memory < 256 MiB at 1M leaves. Loops are bounded by
the leaf count; generation is bounded by `GENERATE_SECONDS`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import json
import os
import pstats
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import nacl.bindings

from clients.audit.policy import LogPolicy
from clients.audit.sources import ExportDirectory
from clients.audit.verifier import verify_log
from keys import lifecycle
from keys.identity import AgencyIdentity
from protocol import auditlog
from protocol.certificate import Role
from protocol.merkle import CompactRange, leaf_hash
from protocol.note import Checkpoint, NoteSigner, sign_checkpoint
from protocol.primitives import seeded_random
from protocol.receipt import MAGIC, VERSION, ReceiptKind

T0 = 1_767_225_600
ORIGIN = "casebridge.th-casebridge/audit"
GENERATE_SECONDS = 300.0
CHECK_EVERY = 997
READ_BLOCK = 8 << 20
AGENCIES = (
    ("TH-ATPD", "กองบังคับการปราบปรามการกระทำความผิดเกี่ยวกับการค้ามนุษย์"),
    ("TH-DSDW", "กรมพัฒนาสังคมและสวัสดิการ"),
    ("TH-DOE", "กรมการจัดหางาน"),
    ("TH-SHELTER-NK", "บ้านพักเด็กและครอบครัวจังหวัดหนองคาย"),
    ("TH-POLICE-UBN", "ตำรวจภูธรจังหวัดอุบลราชธานี"),
    ("TH-OAG", "สำนักงานอัยการสูงสุด"),
    ("LA-MOLSW", "ກະຊວງແຮງງານ ແລະ ສະຫວັດດີການສັງຄົມ"),
    ("LA-ATD", "ກົມຕ້ານການຄ້າມະນຸດ"),
    ("LA-LWU", "ສູນກາງສະຫະພັນແມ່ຍິງລາວ"),
    ("LA-POLICE-VTE", "ກອງບັນຊາການປ້ອງກັນຄວາມສະຫງົບນະຄອນຫຼວງ"),
    ("LA-SHELTER-VTE", "ສູນຕ້ອນຮັບຜູ້ເຄາະຮ້າຍ"),
    ("LA-MOJ", "ກະຊວງຍຸຕິທຳ"),
)


class World:
    """Two national roots, twelve certified agencies, a certified broker, and the log key."""

    def __init__(self) -> None:
        rng = seeded_random(b"casebridge audit verify bench")
        roots = {c: lifecycle.create_root(c, f"{c} national root", T0, rng=rng) for c in ("TH", "LA")}
        self.agencies: dict[str, AgencyIdentity] = {}
        for agency_id, name in AGENCIES:
            agency = lifecycle.create_agency(agency_id, name, T0, rng=rng)
            roots[agency_id[:2]], cert = lifecycle.certify(
                roots[agency_id[:2]], lifecycle.agency_request(agency), (Role.AGENCY,), T0
            )
            self.agencies[agency_id] = lifecycle.import_certificate(
                agency, cert.raw, roots[agency_id[:2]].certificate, T0
            )
        broker = lifecycle.create_broker("TH-CASEBRIDGE", "CaseBridge broker", rng=rng)
        roots["TH"], cert = lifecycle.certify(
            roots["TH"], lifecycle.broker_request(broker), (Role.BROKER,), T0
        )
        self.broker = lifecycle.import_broker_certificate(broker, cert.raw, roots["TH"].certificate, T0)
        self.log = NoteSigner(ORIGIN, broker.checkpoint_key)
        self.ids = [a for a, _ in AGENCIES]


def _receipt(
    signer_id: str,
    key_id: bytes,
    secret: bytes,
    kind: ReceiptKind,
    subject: tuple[bytes, bytes, str, str],
    time_: int,
    log_index: int | None,
    reason: str | None,
) -> bytes:
    """A receipt as `Receipt.issue` makes it (canonical body, Ed25519 under the kind's context)."""
    body = msgpack.packb(
        [MAGIC, VERSION, str(kind), *subject, signer_id, key_id, time_, reason, log_index], use_bin_type=True
    )
    signature = nacl.bindings.crypto_sign(kind.context + body, secret)[:64]
    return msgpack.packb([body, signature], use_bin_type=True)  # type: ignore[no-any-return]


def _leaves(world: World, count: int, seed: int) -> Iterator[bytes]:
    """Exactly `count` leaves of a busy broker's log, in order."""
    rng = random.Random(seed)
    broker = world.broker
    broker_cert = broker.certificate
    assert broker_cert is not None
    broker_secret = broker.receipt_key._signing_key
    secrets = {a: world.agencies[a].signing_key._signing_key for a in world.ids}
    certs = {a: c for a in world.ids if (c := world.agencies[a].certificate) is not None}
    statements = {a: world.agencies[a].encryption_keys[0].statement for a in world.ids}
    index, now, n = 0, T0, 0

    def emit(kind: str, items: list[object]) -> bytes:
        nonlocal index
        raw: bytes = msgpack.packb([auditlog.LEAF_VERSION, kind, now, *items], use_bin_type=True)
        if index % CHECK_EVERY == 0:
            fields = auditlog.parse_leaf(raw).fields
            if auditlog.encode_leaf(now, fields) != raw:
                raise AssertionError(f"leaf {index} differs from what encode_leaf writes")
        index += 1
        return raw

    while index < count:
        now += rng.randrange(0, 4)
        n += 1
        roll = rng.random()
        if roll < 0.004:
            agency = rng.choice(world.ids)
            cert = certs[agency]
            yield emit(
                str(auditlog.LeafKind.CERTIFICATE_REGISTERED), [agency, cert.key_id, cert.raw, "TH-OPERATOR"]
            )
            continue
        if roll < 0.008:
            agency = rng.choice(world.ids)
            st = statements[agency]
            yield emit(str(auditlog.LeafKind.ENCRYPTION_KEY_REGISTERED), [agency, st.key_id, st.raw])
            continue
        if roll < 0.01:
            yield emit(
                str(auditlog.LeafKind.OPERATOR_ACTION),
                ["TH-OPERATOR", "rotate_keys", [rng.choice(world.ids)]],
            )
            continue
        sender = rng.choice(world.ids)
        others = [a for a in world.ids if a[:2] != sender[:2]]
        recipients = sorted(rng.sample(others, rng.choices((1, 2, 3), (60, 30, 10))[0]))
        envelope_id = hashlib.sha256(b"envelope %d" % n).digest()[:16]
        envelope_hash = hashlib.sha256(envelope_id).digest()
        sender_signature = nacl.bindings.crypto_sign(envelope_hash, secrets[sender])[:64]
        parts = [2048 + rng.randrange(4096)] + [rng.randrange(1, 8 << 20) for _ in range(rng.randrange(3))]
        accepted_at = index
        yield emit(
            str(auditlog.LeafKind.ENVELOPE_ACCEPTED),
            [
                envelope_id,
                envelope_hash,
                sender,
                certs[sender].key_id,
                recipients,
                600 + 180 * len(recipients),
                parts,
                now + 14 * 86400,
                sender_signature,
            ],
        )
        for recipient in recipients:
            subject = (envelope_hash, envelope_id, sender, recipient)
            if index >= count:
                return
            raw = _receipt(
                broker.broker_id,
                broker_cert.key_id,
                broker_secret,
                ReceiptKind.ACCEPTED,
                subject,
                now,
                accepted_at,
                None,
            )
            yield emit(str(auditlog.LeafKind.RECEIPT), ["accepted", envelope_id, recipient, raw])
        for recipient in recipients:
            subject = (envelope_hash, envelope_id, sender, recipient)
            fate = rng.random()
            steps: list[tuple[ReceiptKind, str | None]] = (
                [(ReceiptKind.EXPIRED, None)]
                if fate < 0.02
                else [(ReceiptKind.DELIVERED, None), (ReceiptKind.REJECTED, "untrusted_sender")]
                if fate < 0.04
                else [(ReceiptKind.DELIVERED, None), (ReceiptKind.VERIFIED, None)]
            )
            for kind, reason in steps:
                if index >= count:
                    return
                now += rng.randrange(0, 2)
                if kind.signed_by_broker:
                    raw = _receipt(
                        broker.broker_id, broker_cert.key_id, broker_secret, kind, subject, now, None, None
                    )
                else:
                    raw = _receipt(
                        recipient,
                        certs[recipient].key_id,
                        secrets[recipient],
                        kind,
                        subject,
                        now,
                        None,
                        reason,
                    )
                yield emit(str(auditlog.LeafKind.RECEIPT), [str(kind), envelope_id, recipient, raw])
        if index < count:
            yield emit(str(auditlog.LeafKind.ENVELOPE_PURGED), [envelope_id, envelope_hash, sum(parts) + 900])


def generate(directory: Path, count: int, *, seed: int = 1) -> dict[str, object]:
    """Write the export directory for `count` leaves; returns what was written."""
    world = World()
    started = time.perf_counter()
    deadline = started + GENERATE_SECONDS
    tree = CompactRange()
    leaf_bytes = kinds = 0
    mix: dict[str, int] = {}
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "entries").open("wb") as entries, (directory / "hashes").open("wb") as hashes:
        digests: list[bytes] = []
        for leaf in _leaves(world, count, seed):
            entries.write(len(leaf).to_bytes(2, "big") + leaf)
            digests.append(leaf_hash(leaf))
            leaf_bytes += len(leaf)
            kind = msgpack.unpackb(leaf)[1]
            mix[kind] = mix.get(kind, 0) + 1
            if len(digests) == 4096:
                hashes.write(b"".join(digests))
                tree.extend(digests)
                digests.clear()
                if time.perf_counter() > deadline:
                    raise SystemExit(f"generation took over {GENERATE_SECONDS:.0f} s; ask for fewer leaves")
        hashes.write(b"".join(digests))
        tree.extend(digests)
    kinds = len(mix)
    note = sign_checkpoint(Checkpoint(ORIGIN, tree.size, tree.root()), world.log)
    (directory / "checkpoint").write_bytes(note)
    (directory / "log-key").write_text(world.log.vkey.encode())
    return {
        "leaves": tree.size,
        "mean_leaf_bytes": round(leaf_bytes / max(1, tree.size), 1),
        "kinds": kinds,
        "mix": dict(sorted(mix.items())),
        "seconds": round(time.perf_counter() - started, 1),
    }


# --- phases, each in its own process ------------------------------------------------------------


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _split_blocks(path: Path) -> Iterator[list[bytes]]:
    """The leaves of an entries file, a block at a time."""
    with path.open("rb") as handle:
        rest = b""
        while block := handle.read(READ_BLOCK):
            data, at, leaves = rest + block, 0, []
            while at + 2 <= len(data) and at + 2 + (
                length := int.from_bytes(data[at : at + 2], "big")
            ) <= len(data):
                leaves.append(data[at + 2 : at + 2 + length])
                at += 2 + length
            rest = data[at:]
            yield leaves


def phase_hash(directory: Path) -> dict[str, object]:
    """Bare SHA-256 of every leaf and inner node; only the hashing is timed."""
    sha256 = hashlib.sha256
    border: list[bytes] = []
    size = 0
    seconds = cpu = 0.0
    for leaves in _split_blocks(directory / "entries"):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for leaf in leaves:
            current, bits = sha256(b"\x00" + leaf).digest(), size
            while bits & 1:
                current = sha256(b"\x01" + border.pop() + current).digest()
                bits >>= 1
            border.append(current)
            size += 1
        seconds += time.perf_counter() - wall0
        cpu += time.process_time() - cpu0
    root = border[-1]
    for left in reversed(border[:-1]):
        root = sha256(b"\x01" + left + root).digest()
    return {"seconds": seconds, "cpu_seconds": cpu, "leaves": size, "root": root.hex()}


def phase_verify(directory: Path, *, profile: bool = False) -> dict[str, object]:
    policy = LogPolicy.from_text((directory / "log-key").read_text())
    run = verify_log(ExportDirectory(directory), policy, trusted=None, now=T0 + 10**8)
    profiler = cProfile.Profile() if profile else None
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if profiler is not None:
        profiler.enable()
    result = asyncio.run(run)
    if profiler is not None:
        profiler.disable()
    seconds, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if not result.ok:
        raise SystemExit("verify found problems in the generated log:\n" + "\n".join(result.lines()))
    if profiler is not None:
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    assert result.checkpoint is not None
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "leaves": result.checked,
        "root": result.checkpoint.root_hash.hex(),
    }


def _in_subprocess(phase: str, directory: Path, *extra: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.audit_verify_bench", "--phase", phase, "--dir", str(directory), *extra],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    found: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=1, help="verify and baseline runs, alternating")
    parser.add_argument("--dir", help="where to write the export (default: a new temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the export (reused if --dir holds one)")
    parser.add_argument("--profile", action="store_true", help="cProfile the verify phase (to stderr)")
    parser.add_argument("--phase", choices=("hash", "verify"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase is not None:
        directory = Path(args.dir)
        found = (
            phase_hash(directory) if args.phase == "hash" else phase_verify(directory, profile=args.profile)
        )
        print(json.dumps({**found, "peak_rss_mib": round(_peak_rss_mib(), 1)}))
        return 0
    if not 1 <= args.leaves <= 10_000_000 or not 1 <= args.rounds <= 10:
        parser.error("--leaves 1..10,000,000 and --rounds 1..10")
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="casebridge-audit-verify-"))
    directory = base / f"export-{args.leaves}"
    try:
        if (directory / "checkpoint").is_file():
            print(f"reusing the export in {directory}")
        else:
            made = generate(directory, args.leaves)
            print(f"generated {directory}: {json.dumps(made)}")
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        ratios = []
        for round_ in range(args.rounds):
            bare = _in_subprocess("hash", directory)
            checked = _in_subprocess("verify", directory, *(["--profile"] if args.profile else []))
            if bare["root"] != checked["root"] or bare["leaves"] != checked["leaves"]:
                raise SystemExit("the baseline and the verifier disagree about the tree")
            ratio = float(checked["seconds"]) / float(bare["seconds"])  # type: ignore[arg-type]
            ratios.append(ratio)
            print(
                f"round {round_}: bare SHA-256 {bare['seconds']:.2f} s (cpu {bare['cpu_seconds']:.2f}) | "
                f"verify {checked['seconds']:.2f} s (cpu {checked['cpu_seconds']:.2f}), "
                f"{float(checked['seconds']) / int(checked['leaves']) * 1e6:.2f} us/leaf | "  # type: ignore[arg-type]
                f"ratio {ratio:.2f} | peak RSS verify {checked['peak_rss_mib']} MiB, "
                f"baseline {bare['peak_rss_mib']} MiB | load {os.getloadavg()[0]:.2f}"
            )
        median = sorted(ratios)[len(ratios) // 2]
        print(f"ratio verify / bare SHA-256: best {min(ratios):.2f}, median {median:.2f}")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
            if not args.dir:
                shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
