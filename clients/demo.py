"""`casebridge demo`: one command that shows a referral travel from Thailand to Lao PDR.

It plays every part on one machine, on 127.0.0.1, inside one directory: the two national
authorities (roots), two agencies (TH-ATPD and LA-NSATIP), the broker operator, and the two
agencies' case systems. The broker is a separate process started with
`python -m casebridge broker ...`, as an operator runs it; the agencies use the client library
(`clients.agency`). The people, the agencies' case and the attachment are fictional.

Invariants:
- This module never imports `broker`: the broker is driven only through its command line and
  its HTTP API, so the demo exercises what operators and agencies really run.
- Every wait is bounded: each command, the broker's start and stop, each poll, the whole demo.
- On every way out (success, a failed step, SIGINT, SIGTERM, SIGHUP) the broker is stopped
  (SIGTERM, then SIGKILL if it does not stop in time) and the directory is removed, unless
  `--keep` named one to keep. The broker runs in its own session, so only the demo signals it.
- A failed step ends the command with one plain line on stderr naming the step, and status 1.
- The keystores are throwaway: random passphrases held only by this process (and, for the
  broker's, by the broker's environment), sealed with the fast "interactive" Argon2id profile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import textwrap
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from clients.agency import AgencyClient
from clients.cli_output import when
from clients.inbox import save_attachments
from clients.outbox import OutboxState
from keys import lifecycle
from keys.files import PUBLIC_MODE, FileAccessError, read_bytes, write_atomic
from keys.fingerprint import fingerprint
from keys.identity import RootIdentity
from keys.keystore import KDF_PROFILES, save_identity
from protocol.certificate import Role
from protocol.errors import CaseBridgeError, InvalidField
from protocol.receipt import ReceiptKind

KDF = KDF_PROFILES["interactive"]
BROKER_ID = "TH-CASEBRIDGE"
BROKER_PASSPHRASE_ENV = "CASEBRIDGE_BROKER_PASSPHRASE"  # noqa: S105 - a variable's name, not a secret
RETENTION_ENV = "CASEBRIDGE_RETENTION_INTERVAL_SECONDS"
CONFIG = "broker/broker.toml"
COMMAND_TIMEOUT_SECONDS = 60.0
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 30.0
DEMO_TIMEOUT_SECONDS = 180.0
POLLS = 20
POLL_PAUSE_SECONDS = 0.5
STEPS = 9
WIDTH = 96
RECEIPT_KINDS = (ReceiptKind.ACCEPTED, ReceiptKind.DELIVERED, ReceiptKind.VERIFIED)
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True, slots=True)
class Party:
    """One country's side: its national root and its agency, and where the demo keeps them."""

    country: str
    root_name: str
    agency_id: str
    agency_name: str
    english: str

    def file(self, suffix: str) -> str:
        """A name in the demo directory for this agency: "th-atpd.cbks", "th-atpd-state", ..."""
        return f"{self.agency_id.lower()}{suffix}"


THAILAND = Party(
    "TH", "Thailand national root", "TH-ATPD", "กองบังคับการปราบปรามการค้ามนุษย์",
    "Anti-Trafficking in Persons Division, Royal Thai Police",
)  # fmt: skip
LAOS = Party(
    "LA", "Lao PDR national root", "LA-NSATIP",
    "ສຳນັກງານເລຂາທິການຄະນະກຳມະການແຫ່ງຊາດ ເພື່ອຕ້ານການຄ້າມະນຸດ",
    "National Secretariat for Anti-Trafficking in Persons, Lao PDR",
)  # fmt: skip

REFERRAL_TEXT = """\
เรื่อง  แจ้งการคัดแยกผู้เสียหายจากการค้ามนุษย์ และขอความร่วมมือ
เรียน  สำนักงานเลขาธิการคณะกรรมการแห่งชาติเพื่อต่อต้านการค้ามนุษย์ สปป.ลาว

กองบังคับการปราบปรามการค้ามนุษย์ได้คัดแยกหญิงสัญชาติลาว ชื่อ ນາງ ສົມພອນ ແກ້ວມະນີ
(Ms Somphone Keomany) อายุ 19 ปี ภูมิลำเนาแขวงสะหวันนะเขต ว่าเป็นผู้เสียหายจากการค้ามนุษย์
(การบังคับใช้แรงงานในโรงงานแปรรูปอาหาร จังหวัดสมุทรสาคร) ขณะนี้อยู่ในความคุ้มครองของ
สถานคุ้มครองและพัฒนาอาชีพ ได้รับการตรวจสุขภาพแล้ว และประสงค์เดินทางกลับภูมิลำเนา

จึงขอความร่วมมือ
1. ยืนยันสัญชาติและตัวตนของผู้เสียหาย
2. ติดตามครอบครัวที่บ้านโพนสะอาด เมืองไกสอนพมวิหาน แขวงสะหวันนะเขต
3. ประเมินความปลอดภัยของครอบครัวก่อนการส่งกลับ

เอกสารแนบ: บันทึกการคัดแยกผู้เสียหาย 1 ฉบับ
(ข้อมูลสมมติ ใช้เพื่อการสาธิตเท่านั้น)
"""
ATTACHMENT_NAME = "บันทึกการคัดแยกผู้เสียหาย.txt"
ATTACHMENT_TEXT = """\
บันทึกการคัดแยกผู้เสียหายจากการค้ามนุษย์
ບົດບັນທຶກການກັ່ນຕອງຜູ້ຖືກເຄາະຮ້າຍຈາກການຄ້າມະນຸດ
(ข้อมูลสมมติ / ຂໍ້ມູນສົມມຸດ)

ชื่อ / ຊື່: ນາງ ສົມພອນ ແກ້ວມະນີ (Ms Somphone Keomany)
สัญชาติ / ສັນຊາດ: ลาว / ລາວ
อายุ / ອາຍຸ: 19
ภูมิลำเนา / ພູມລຳເນົາ: ບ້ານໂພນສະອາດ, ເມືອງໄກສອນພົມວິຫານ, ແຂວງສະຫວັນນະເຂດ
สถานที่พบ / ສະຖານທີ່ພົບ: จังหวัดสมุทรสาคร / ແຂວງສະມຸດສາຄອນ
ผลการคัดแยก / ຜົນການກັ່ນຕອງ: ผู้เสียหายจากการค้ามนุษย์ (การบังคับใช้แรงงาน)
ความประสงค์ / ຄວາມປະສົງ: กลับภูมิลำเนา / ກັບຄືນພູມລຳເນົາ
ผู้ติดต่อในครอบครัว / ຜູ້ຕິດຕໍ່ໃນຄອບຄົວ: ນາງ ບົວພັນ ແກ້ວມະນີ (ແມ່ / แม่)
"""


class _StepFailed(Exception):
    """A step did not do what it should; the message says what happened instead."""


class _Story:
    """Numbered steps, each with a short explanation; remembers the current one for errors."""

    def __init__(self) -> None:
        self.number = 0
        self.title = "preparing"

    def step(self, title: str, explanation: str) -> None:
        self.number += 1
        self.title = title
        print(f"\n[{self.number}/{STEPS}] {title}")
        print(textwrap.fill(explanation, WIDTH, initial_indent="  ", subsequent_indent="  "))

    @staticmethod
    def say(*lines: str) -> None:
        for line in lines:
            print(f"  {line}")
        sys.stdout.flush()


def _quoted(text: str) -> list[str]:
    return [f"    │ {line}".rstrip() for line in text.rstrip("\n").splitlines()]


class _Commands:
    """Runs `casebridge ...` in its own process, in the demo directory, with a clean environment."""

    def __init__(self, directory: Path, broker_passphrase: str) -> None:
        self.directory = directory
        env = {k: v for k, v in os.environ.items() if not k.startswith("CASEBRIDGE_")}
        env[BROKER_PASSPHRASE_ENV] = broker_passphrase
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
        self.env = env
        self.broker: asyncio.subprocess.Process | None = None

    async def run(self, *args: str) -> list[str]:
        """Run one command to its end; its output lines, or `_StepFailed` with its last line."""
        _Story.say("$ casebridge " + shlex.join(args))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "casebridge", *args, cwd=self.directory, env=self.env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT_SECONDS)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        if process.returncode != 0:
            lines = err.decode("utf-8", errors="replace").strip().splitlines() or ["(no message)"]
            raise _StepFailed(
                f"casebridge {' '.join(args[:2])} exited with status {process.returncode}: {lines[-1]}"
            )
        return out.decode("utf-8", errors="replace").splitlines()

    async def serve(self, log_file: Path, extra_env: Mapping[str, str]) -> str:
        """Start `casebridge broker serve`; returns its URL once it announced it."""
        shown = " ".join(f"{k}={v}" for k, v in extra_env.items())
        _Story.say(f"$ {shown} casebridge broker serve --config {CONFIG}")
        with log_file.open("ab") as log:
            self.broker = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "casebridge", "broker", "serve", "--config", CONFIG, cwd=self.directory,
                env={**self.env, **extra_env}, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=log, start_new_session=True,
            )  # fmt: skip
        assert self.broker.stdout is not None
        try:
            line = await asyncio.wait_for(self.broker.stdout.readline(), START_TIMEOUT_SECONDS)
        except TimeoutError as e:
            raise _StepFailed(
                f"the broker did not announce its URL within {START_TIMEOUT_SECONDS:.0f} s"
            ) from e
        if not line:
            await self.broker.wait()
            logged = log_file.read_text("utf-8", errors="replace").strip().splitlines() or ["(no log)"]
            raise _StepFailed(f"the broker exited with status {self.broker.returncode}: {logged[-1]}")
        return line.decode().strip()

    async def stop_broker(self) -> int | None:
        """SIGTERM, then wait (bounded); SIGKILL if it would not stop. Its exit status, or None
        when no broker was started. Safe to call more than once."""
        process = self.broker
        if process is None:
            return None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_SECONDS)
            except TimeoutError as e:
                process.kill()
                await process.wait()
                raise _StepFailed(
                    f"the broker did not stop within {STOP_TIMEOUT_SECONDS:.0f} s; killed"
                ) from e
        return process.returncode


# --- the steps ------------------------------------------------------------------------------------


class _Walkthrough:
    def __init__(self, directory: Path, story: _Story) -> None:
        self.d = directory
        self.story = story
        self.passphrases = {name: secrets.token_urlsafe(24) for name in ("TH", "LA", "broker")}
        self.commands = _Commands(directory, self.passphrases["broker"])
        self.roots: dict[str, RootIdentity] = {}

    def _save_root(self, root: RootIdentity) -> None:
        path = self.d / f"{root.country.lower()}-root.cbks"
        save_identity(path, root, self.passphrases[root.country], KDF, overwrite=path.exists())

    async def run(self) -> None:
        self.national_roots()
        self.agencies()
        await self.broker_keys()
        await self.register_agencies()
        try:
            async with contextlib.AsyncExitStack() as stack:
                th, la = await self.start(stack)
                envelope_id = await self.send(th)
                await self.receive(la, envelope_id)
                await self.receipts(th, envelope_id)
            await self.stop()
        finally:
            with contextlib.suppress(_StepFailed):
                await self.commands.stop_broker()

    def national_roots(self) -> None:
        self.story.step(
            "Two national roots",
            "Each country's national authority creates its root key (kept offline in real life). A root "
            "certifies only its own country's agencies. The partners read each other's root fingerprint "
            "aloud before pinning it; both agencies here pin both roots. These throwaway keystores use "
            'the fast "interactive" Argon2id profile; real ones use "moderate" or stronger.',
        )
        now = int(time.time())
        for party in (THAILAND, LAOS):
            root = lifecycle.create_root(party.country, party.root_name, now)
            self._save_root(root)
            write_atomic(
                self.d / f"{party.country.lower()}-root.cert", root.certificate.raw, mode=PUBLIC_MODE
            )
            self.roots[party.country] = root
            self.story.say(
                f"{party.country}  {party.root_name:<24} {fingerprint(root.certificate.public_key)}"
            )

    def agencies(self) -> None:
        self.story.step(
            "Two agencies, certified by their roots",
            "Each agency has a signing key, certified by its national root with the role agency, and an "
            "X25519 encryption key signed by that signing key, all sealed in the agency's keystore.",
        )
        now = int(time.time())
        for party in (THAILAND, LAOS):
            agency = lifecycle.create_agency(party.agency_id, party.agency_name, now)
            root, cert = lifecycle.certify(
                self.roots[party.country], lifecycle.agency_request(agency), [Role.AGENCY], now
            )
            self._save_root(root)
            self.roots[party.country] = root
            agency = lifecycle.import_certificate(agency, cert.raw, root.certificate, now)
            save_identity(self.d / party.file(".cbks"), agency, self.passphrases[party.country], KDF)
            write_atomic(self.d / party.file(".cert"), cert.raw, mode=PUBLIC_MODE)
            self.story.say(
                f"{party.agency_id:<10} {party.agency_name}",
                f"{'':<10} {party.english}; {party.country} root, role agency, serial {cert.serial}",
            )

    async def broker_keys(self) -> None:
        self.story.step(
            "The broker's keys",
            "The operator creates the broker's data directory and keys: a receipt key, which the Thai "
            "root certifies with the role broker, and an audit-log checkpoint key. Clients accept the "
            "broker's receipts only through that certificate.",
        )
        output = await self.commands.run(
            "broker", "init", "--data-dir", "broker", "--id", BROKER_ID, "--name", "CaseBridge demo broker",
            "--root-cert", "th-root.cert", "--root-cert", "la-root.cert", "--listen-port", "0",
            "--kdf-profile", "interactive",
        )  # fmt: skip
        self.story.say(*(f"  {line.strip()}" for line in output if "fingerprint" in line))
        request = read_bytes(self.d / "broker" / "broker.csr")
        now = int(time.time())
        root, cert = lifecycle.certify(self.roots["TH"], request, [Role.BROKER], now)
        self._save_root(root)
        self.roots["TH"] = root
        write_atomic(self.d / "broker.cert", cert.raw, mode=PUBLIC_MODE)
        self.story.say(
            f"the TH root certifies broker/broker.csr with role broker -> broker.cert (serial {cert.serial})"
        )
        output = await self.commands.run("broker", "import-cert", "--config", CONFIG, "--cert", "broker.cert")
        self.story.say(*(f"  {line}" for line in output))

    async def register_agencies(self) -> None:
        self.story.step(
            "Register the agencies with the broker",
            "The operator registers both agencies' certificates; the broker checks each against its "
            "pinned roots. This is the offline form, done before the broker starts (a running broker "
            "takes them over signed HTTP from an operator).",
        )
        for party in (THAILAND, LAOS):
            output = await self.commands.run(
                "broker", "register-certificate", "--config", CONFIG, party.file(".cert")
            )
            self.story.say(*(f"  {line}" for line in output))

    async def start(self, stack: contextlib.AsyncExitStack) -> tuple[AgencyClient, AgencyClient]:
        self.story.step(
            "Start the broker; the agencies connect",
            "The broker is its own process on 127.0.0.1 (retention every second, so the purge shows "
            "below). Each agency opens its client (keystore, both pinned roots, a local state directory) "
            "and registers its own encryption key over a request signed with its certified key; then it "
            "fetches the broker's directory and keeps only what verifies against the pinned roots.",
        )
        url = await self.commands.serve(self.d / "broker" / "broker.log", {RETENTION_ENV: "1"})
        assert self.commands.broker is not None
        self.story.say(
            f"  serving at {url} (process {self.commands.broker.pid}); JSON log in broker/broker.log"
        )
        clients = []
        for party in (THAILAND, LAOS):
            client = AgencyClient.open(
                self.d / party.file(".cbks"),
                self.passphrases[party.country],
                trust=[self.d / "th-root.cert", self.d / "la-root.cert"],
                broker_url=url,
                state_dir=self.d / party.file("-state"),
            )
            await stack.enter_async_context(client)
            clients.append(client)
            published = await client.publish_encryption_keys()
            self.story.say(f"{party.agency_id}: registered {published} encryption key")
        for party, client in zip((THAILAND, LAOS), clients, strict=True):
            report = await client.refresh_directory()
            self.story.say(
                f"{party.agency_id}: directory verified: {report.certificates} certificates, "
                f"{report.encryption_keys} encryption keys, {report.refused} refused"
            )
        return clients[0], clients[1]

    async def send(self, th: AgencyClient) -> str:
        self.story.step(
            "Thailand sends the referral",
            "TH-ATPD's client seals the referral for LA-NSATIP's encryption key (accepted only through "
            "the LA root): one random key per envelope, body and attachment encrypted in chunks, the "
            "header signed by TH-ATPD. The sealed envelope goes into the local outbox before upload, so "
            "an unreachable broker would only delay it. The broker checks the signature, sender, "
            "recipients and digests, cannot read anything, stores it durably and signs an accepted "
            "receipt.",
        )
        outgoing = self.d / "outgoing"
        outgoing.mkdir(mode=0o700)
        attachment = outgoing / ATTACHMENT_NAME
        attachment.write_text(ATTACHMENT_TEXT, encoding="utf-8")
        body = REFERRAL_TEXT.encode("utf-8")
        self.story.say(f"body (Thai, text/plain, {len(body)} bytes):", *_quoted(REFERRAL_TEXT))
        self.story.say(f"attachment: {ATTACHMENT_NAME} ({attachment.stat().st_size} bytes, Thai and Lao)")
        result = await th.send([LAOS.agency_id], body, attachments=[attachment])
        if result.state is not OutboxState.ACCEPTED:
            detail = (result.problem or {}).get("detail", "the broker could not be reached")
            raise _StepFailed(f"the envelope is {result.state}, not accepted: {detail}")
        accepted = result.accepted[0]
        self.story.say(f"envelope {result.envelope_id}: accepted by {accepted.signer_id}")
        self.story.say(f"the broker's accepted receipt verified; audit log index {accepted.log_index}")
        return result.envelope_id

    async def receive(self, la: AgencyClient, envelope_id: str) -> None:
        self.story.step(
            "Lao PDR receives and verifies it",
            "LA-NSATIP's client downloads every part, checks each against the signed header and signs a "
            "delivered receipt. It then checks, in order: TH-ATPD's certificate chain to the pinned TH "
            "root, the signature, that LA-NSATIP is a recipient, the envelope id and key commitment, "
            "replay and expiry. It decrypts the file straight into a sealed copy (nothing decrypted "
            "is written to disk in clear), and only after every check passed records the envelope, "
            "sealed, and signs a verified receipt. The application sees it until it acknowledges it, "
            "and never again after: exactly-once handling; it saves the file by an explicit call.",
        )
        deliveries = await la.fetch_deliveries()
        mine = [d for d in deliveries if d.envelope_id == envelope_id]
        if len(mine) != 1:
            raise _StepFailed(f"LA-NSATIP received {len(deliveries)} referral(s), not the one sent")
        delivery = mine[0]
        self.story.say(
            f"from {delivery.sender_id} ({delivery.sender_name}), accepted {when(delivery.accepted_at)}",
            f"body ({delivery.content_type}), decrypted:",
            *_quoted(delivery.text),
        )
        saved = save_attachments(delivery, self.d / LAOS.file("-received"))
        await la.ack(delivery)
        original = hashlib.sha256(ATTACHMENT_TEXT.encode("utf-8")).digest()
        for path in saved:
            data = path.read_bytes()
            same = "identical to" if hashlib.sha256(data).digest() == original else "DIFFERENT from"
            self.story.say(
                f"attachment saved: {path.relative_to(self.d)} ({len(data)} bytes, {same} the file sent)"
            )
            if same != "identical to":
                raise _StepFailed(f"the saved attachment {path.name} differs from the file sent")
        if len(saved) != 1:
            raise _StepFailed(f"{len(saved)} attachments arrived instead of 1")
        if not la.is_processed(envelope_id):
            raise _StepFailed("the acknowledged referral is not marked processed")
        self.story.say("acknowledged: marked processed, so it is never handed over again")

    async def receipts(self, th: AgencyClient, envelope_id: str) -> None:
        self.story.step(
            "The receipts arrive back in Thailand",
            "Every receipt is signed and bound to the envelope's hash and id, the sender and the "
            "recipient. TH-ATPD's client verifies each before keeping it: the broker's through its "
            "certificate from the TH root, LA-NSATIP's through the LA root. The verified receipt is "
            "LA-NSATIP's proof of receipt, which it cannot deny. Once every recipient verified, the "
            "broker purges the ciphertext; the audit log keeps the facts.",
        )
        kinds: set[ReceiptKind] = set()
        for _ in range(POLLS):
            await th.sync_receipts(wait_seconds=1)
            kinds = {r.kind for r in th.receipts(envelope_id)}
            if kinds.issuperset(RECEIPT_KINDS):
                break
        missing = [str(k) for k in RECEIPT_KINDS if k not in kinds]
        if missing:
            raise _StepFailed(f"no {', '.join(missing)} receipt reached TH-ATPD")
        order = list(ReceiptKind)
        for record in sorted(th.receipts(envelope_id), key=lambda r: (r.time, order.index(r.kind))):
            r = record.receipt
            index = f", audit log index {r.log_index}" if r.log_index is not None else ""
            self.story.say(f"{r.kind!s:<10} {when(r.time)}  signed by {r.signer_id}{index}")
        status = await th.status(envelope_id)
        for _ in range(POLLS):
            if status.purged:
                break
            await asyncio.sleep(POLL_PAUSE_SECONDS)
            status = await th.status(envelope_id)
        state = status.recipients[LAOS.agency_id].state if LAOS.agency_id in status.recipients else "unknown"
        purged = "ciphertext purged" if status.purged else "ciphertext not purged yet"
        self.story.say(f"the broker's status: {LAOS.agency_id} {state}; {purged}")
        if state != "verified":
            raise _StepFailed(f"the broker reports {LAOS.agency_id} as {state}, not verified")

    async def stop(self) -> None:
        self.story.step(
            "Stop the broker",
            "SIGTERM: the broker stops accepting, lets requests in flight finish, records the stop in "
            "the audit log and exits 0. The operator's status command reads the stopped broker's data.",
        )
        status = await self.commands.stop_broker()
        self.story.say(f"the broker exited with status {status}")
        if status != 0:
            raise _StepFailed(f"the broker exited with status {status} after SIGTERM")
        output = await self.commands.run("broker", "status", "--config", CONFIG)
        self.story.say(*(f"  {line}" for line in output))


# --- the command ----------------------------------------------------------------------------------


async def _main(directory: Path, story: _Story) -> None:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, task.cancel)
    try:
        async with asyncio.timeout(DEMO_TIMEOUT_SECONDS):
            await _Walkthrough(directory, story).run()
    finally:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(signum)


def _describe(error: Exception) -> str:
    if isinstance(error, CaseBridgeError):
        return f"{error.title}: {error.detail}"
    if isinstance(error, TimeoutError):
        return f"the demo did not finish within {DEMO_TIMEOUT_SECONDS:.0f} s"
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    return str(error) or type(error).__name__


def _directory(keep: str | None) -> Path:
    """A new temporary directory, or `keep` (created if need be) when it is new or empty."""
    try:
        if keep is None:
            return Path(tempfile.mkdtemp(prefix="casebridge-demo-"))
        directory = Path(keep).absolute()
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise InvalidField("--keep", f"a new or empty directory; {directory} is not one")
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return directory
    except OSError as e:
        raise FileAccessError(f"cannot create the demo directory: {_describe(e)}.") from e


def run(args: argparse.Namespace) -> int:
    directory = _directory(args.keep)
    story = _Story()
    started = time.monotonic()
    print("CaseBridge demo: a referral from Thailand to Lao PDR through a real broker on 127.0.0.1.")
    print(f"Working in {directory}" + (" (kept afterwards)." if args.keep else " (removed afterwards)."))
    print("The people, agencies and case in this demo are fictional.")
    failure: str | None = None
    try:
        asyncio.run(_main(directory, story))
    except asyncio.CancelledError:
        failure = "stopped by a signal; the broker was stopped"
    # Every failure of a walkthrough step is reported the same way: one line naming the step.
    except Exception as e:
        failure = f"failed at step {story.number} ({story.title}): {_describe(e)}"
    finally:
        if args.keep is None:
            shutil.rmtree(directory, ignore_errors=True)
    if failure is not None:
        print(f"casebridge: demo {failure}", file=sys.stderr)
        return 1
    print(f"\nDone in {time.monotonic() - started:.1f} s.", end=" ")
    if args.keep is None:
        print(f"Removed {directory}; no broker process is left.")
    else:
        print(f"Everything is kept in {directory}; try:")
        print(f"  casebridge broker status --config {directory / CONFIG}")
        print(f"  casebridge keys fingerprint {directory / THAILAND.file('.cert')}")
        print("(The keystores' random passphrases were not kept: the keystores cannot be reopened.)")
    return 0


__all__ = ["run"]
