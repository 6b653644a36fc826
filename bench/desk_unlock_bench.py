"""What unlocking the desk costs with many real cases in the agency's encrypted case store.

    .venv/bin/python -m bench.desk_unlock_bench                  # 10,000 cases, 3 rounds
    .venv/bin/python -m bench.desk_unlock_bench --cases 1000 --rounds 5
    .venv/bin/python -m bench.desk_unlock_bench --dir /var/tmp --keep

- The store: `--cases` real cases of a Thai agency (TH-DSDW) with the Lao focal point
  (LA-MLSW), built once per run in a temporary directory. Each opens with a referral about a
  person with a Thai or Lao name, sent through `ReferralMessaging.send`, and goes on with the
  typical answers (acknowledgement, acceptance or decline, questions before deciding, info
  requests and answers with attachments, case updates), each built by the client's
  `MessageBuilder` and recorded as the client records it: sent ones through
  `ReferralMessaging.send`, received ones through `ReferralMessaging.admit` with the envelope's
  manifest. Times spread over a year, so some requests are overdue.
- Measured, each phase in a fresh subprocess that reports wall time, CPU time and peak resident
  memory above the interpreter's after imports (VmHWM):
  `unlock`: what the desk does after the passphrase: open the `CaseStore` with the identity and
  build the inbox index with `load_case_index`, the function `Workspace.start` calls; then the
  first inbox page (the attention order over every case), the next page, and a search over
  every case (a Lao name part, and a text no case holds).
  `replay`: the unlock before summary rows: every thread rebuilt by replay (`threads`) and
  summarised.
  `migrate`: the first unlock of a store written before summary rows (they are built then).
  `keystore`: opening the agency keystore under the default KDF profile (the passphrase itself).
- Baselines, in the same run: the floor of reading and decrypting the same rows, each sealed
  row selected and decrypted with the store key through PyNaCl, nothing else: the summary rows
  (the floor of `unlock`) and the case and message rows (the floor of `replay`).

Loops are bounded by `--cases` (at most `MAX_CASES`) and `--rounds`; building is bounded by
`BUILD_SECONDS`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import peak_rss_bytes
from clients.case_store import DATABASE_NAME, CaseStore
from clients.case_threads import region_today, summarise
from clients.desk.case_index import CaseIndex
from clients.local_records import OutboxEntry, OutboxState
from clients.referrals import MessageBuilder, ReferralMessaging
from clients.sending import SendResult
from keys.identity import AgencyIdentity
from keys.keystore import DEFAULT_PROFILE, load_agency, save_identity
from keys.lifecycle import create_agency
from protocol.envelope import AttachmentInfo, Manifest
from protocol.referral import (
    CONTENT_TYPE,
    CaseState,
    Consent,
    ConsentGiver,
    DeclineReason,
    LegalBasis,
    Message,
    MessageType,
    Person,
    PersonName,
    RequestedAction,
    ReturnWish,
    Scope,
    Sex,
    UpdateKind,
    encode_message,
)
from protocol.referral.records import Address
from tests.case_store_v1 import as_schema_1, open_record, record_key

MT = MessageType
MAX_CASES = 50_000
MAX_ROUNDS = 10
BUILD_SECONDS = 1800.0
DAY = 86_400
NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
TH, LA = "TH-DSDW", "LA-MLSW"
PASSPHRASE = "ລະຫັດຜ່ານ ทดสอบ"
THAI_GIVEN = ("สมชาย", "สมหญิง", "มาลี", "วันเพ็ญ", "อรุณี", "กมล", "สุดา", "บุญมี", "ทองใบ", "ประภา")
THAI_FAMILY = ("ใจดี", "แสงทอง", "ศรีสุข", "บุญเรือง", "พรหมมา", "จันทร์เพ็ญ", "วงศ์ใหญ่", "สุขสวัสดิ์")
LAO_GIVEN = ("ສົມພອນ", "ບົວໄລ", "ຄຳຫຼ້າ", "ນ້ອຍ", "ແສງເດືອນ", "ມະນີວັນ", "ພອນສະຫວັນ", "ດາວວອນ", "ຈັນທອນ")
LAO_FAMILY = ("ແກ້ວມະນີ", "ສີສຸວັນ", "ພົມມະວົງ", "ຈັນທະວົງ", "ວົງສາ", "ໄຊຍະວົງ", "ສຸລິຍະ", "ອິນທະວົງ")
ROMAN = {
    "สมชาย": "Somchai", "สมหญิง": "Somying", "มาลี": "Malee", "วันเพ็ญ": "Wanphen", "อรุณี": "Arunee",
    "กมล": "Kamon", "สุดา": "Suda", "บุญมี": "Boonmee", "ทองใบ": "Thongbai", "ประภา": "Prapha",
    "ใจดี": "Jaidee", "แสงทอง": "Saengthong", "ศรีสุข": "Srisuk", "บุญเรือง": "Boonruang",
    "พรหมมา": "Phromma", "จันทร์เพ็ญ": "Chanphen", "วงศ์ใหญ่": "Wongyai", "สุขสวัสดิ์": "Suksawat",
    "ສົມພອນ": "Somphone", "ບົວໄລ": "Boualy", "ຄຳຫຼ້າ": "Khamla", "ນ້ອຍ": "Noy",
    "ແສງເດືອນ": "Sengdeuan", "ມະນີວັນ": "Manivanh", "ພອນສະຫວັນ": "Phonesavanh", "ດາວວອນ": "Daovone",
    "ຈັນທອນ": "Chanthone", "ແກ້ວມະນີ": "Keomany", "ສີສຸວັນ": "Sisouvanh", "ພົມມະວົງ": "Phommavong",
    "ຈັນທະວົງ": "Chanthavong", "ວົງສາ": "Vongsa", "ໄຊຍະວົງ": "Xayavong", "ສຸລິຍະ": "Souliya",
    "ອິນທະວົງ": "Inthavong",
}  # fmt: skip
NOTE_TH = "ผู้เสียหายประสงค์จะกลับบ้าน ต้องการล่ามภาษาลาว เอกสารประกอบ.pdf แนบมาแล้ว"
NOTE_LO = "ຜູ້ເສຍຫາຍຢາກກັບບ້ານ ແລະ ຕ້ອງການລ່າມພາສາລາວ ເອກະສານ.pdf ຄັດຕິດມາແລ້ວ"
SEARCH_HIT = "ແກ້ວມະ"
SEARCH_MISS = "ບໍ່ມີໃຜ ไม่มีใคร"


class Clock:
    """The builder's clock: each message is recorded at the time its script gives it."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> int:
        return self.now


def _person(rng: random.Random) -> Person:
    lao = rng.random() < 0.65
    given = rng.choice(LAO_GIVEN if lao else THAI_GIVEN)
    family = rng.choice(LAO_FAMILY if lao else THAI_FAMILY)
    name = PersonName(
        full_native=f"{given} {family}",
        given_native=given,
        family_native=family,
        full_romanised=f"{ROMAN[given]} {ROMAN[family].upper()}",
    )
    return Person(
        name=name,
        sex=rng.choice((Sex.FEMALE, Sex.MALE)),
        is_child=False,
        date_of_birth=f"{rng.randrange(1975, 2006)}-0{rng.randrange(1, 10)}-1{rng.randrange(0, 10)}",
        claimed_nationality="LA" if lao else "TH",
        languages=("lo",) if lao else ("th",),
    )


class CaseBuilder:
    """Plays case scripts through the client's own sending and receiving code."""

    def __init__(self, store: CaseStore) -> None:
        self.clock = Clock()
        self.store = store
        self.ours = MessageBuilder(TH, store, clock=self.clock, rng=os.urandom)
        self.theirs = MessageBuilder(LA, store, clock=self.clock, rng=os.urandom)
        self.messaging = ReferralMessaging(TH, store, clock=self.clock)
        self.entries = Path(store.directory) / "outbox"

    async def _seal(self, body: bytes) -> OutboxEntry:
        envelope_id = os.urandom(16).hex()
        return OutboxEntry(
            envelope_id, os.urandom(32).hex(), (LA,), self.entries, "", len(body), self.clock(),
            OutboxState.PENDING,
        )  # fmt: skip

    async def _upload(self, entry: OutboxEntry) -> SendResult:
        return SendResult(entry.envelope_id, entry.envelope_hash, entry.recipients, OutboxState.PENDING)

    async def send(self, message: Message, files: tuple[str, ...] = ()) -> CaseState:
        sent = await self.messaging.send(message, filenames=files, seal=self._seal, upload=self._upload)
        return sent.state

    def receive(self, message: Message, files: tuple[str, ...] = ()) -> CaseState:
        manifest = Manifest(
            envelope_id=os.urandom(16),
            sender_id=LA,
            recipients=(TH,),
            content_type=CONTENT_TYPE,
            body=encode_message(message),
            attachments=tuple(AttachmentInfo(name, "application/pdf", 48_213) for name in files),
        )
        refusal = self.messaging.admit(manifest.envelope_id.hex(), LA, manifest)
        if refusal is not None:
            raise RuntimeError(f"the bench's own message was refused: {refusal.summary}")
        thread = self.store.thread(message.header.case_link_id, now=self.clock())
        assert thread is not None
        return thread.state

    def _from_them(self, state: CaseState, mtype: MessageType, **body: Any) -> Message:
        # Both sides hold equal states but for the local agency (protocol.referral.case_state).
        return self.theirs.message(replace(state, local_agency_id=LA), mtype, **body)

    async def case(self, n: int) -> int:
        """Case `n`; returns how many messages it holds."""
        rng = random.Random(n)
        clock = self.clock
        clock.now = NOW - rng.randrange(100, 465) * DAY
        consent = Consent(
            consent_id=os.urandom(16),
            given_by=ConsentGiver.PERSON,
            is_child=False,
            given_on=region_today(clock.now - 2 * DAY),
            language="lo",
            officer="TH-DSDW:off-0417",
            legal_basis=LegalBasis.EXPLICIT_CONSENT,
            scopes=tuple(Scope),
            interpreter="ບົວໄລ ສີສຸວັນ",
        )
        person = _person(rng)
        lao = person.claimed_nationality == "LA"
        referral = self.ours.referral(
            to=LA,
            case_ref=f"ศคม.นค. {n + 1}/2568",
            consent=consent,
            person=person,
            identified_on=region_today(clock.now - 3 * DAY),
            identified_by="ตำรวจภูธรจังหวัดหนองคาย",
            requested_actions=(RequestedAction.VERIFY_NATIONALITY, RequestedAction.REPATRIATE),
            return_wish=ReturnWish.WANTS_TO_RETURN,
            home=Address(country="LA", province="ແຂວງສະຫວັນນະເຂດ") if lao else None,
            summary=NOTE_TH,
        )
        state = await self.send(referral)
        count = 1
        if rng.random() < 0.05:
            return count
        clock.now += DAY
        state = self.receive(self._from_them(state, MT.ACKNOWLEDGEMENT, read_by="LA-MLSW:off-2231"))
        count += 1
        roll = rng.random()
        if roll < 0.10:
            clock.now += DAY
            due = region_today(clock.now + rng.randrange(-30, 60) * DAY)
            ask = self._from_them(state, MT.INFO_REQUEST, questions=NOTE_LO, due_on=due)
            self.receive(ask)
            return count + 1
        if roll < 0.15:
            clock.now += 2 * DAY
            decline = self._from_them(
                state, MT.DECLINE, reason=DeclineReason.OUTSIDE_MANDATE, reason_text=NOTE_LO,
                declined_by="LA-MLSW:off-2231",
            )  # fmt: skip
            self.receive(decline)
            return count + 1
        clock.now += 2 * DAY
        accept = self._from_them(
            state, MT.ACCEPTANCE, case_ref=f"ຮສ {n + 1}/2025", accepted_by="LA-MLSW:off-2231", note=NOTE_LO
        )
        state = self.receive(accept)
        count += 1
        if rng.random() < 0.4:
            clock.now += DAY
            due = region_today(clock.now + rng.randrange(7, 30) * DAY)
            ask = self.ours.message(state, MT.INFO_REQUEST, questions=NOTE_TH, due_on=due)
            state = await self.send(ask)
            count += 1
            if rng.random() < 0.7:
                clock.now += rng.randrange(3, 20) * DAY
                files = ("ເອກະສານ.pdf",)
                answer = self._from_them(state, MT.INFO_RESPONSE, answer=NOTE_LO, attachments=files)
                state = self.receive(answer, files)
                count += 1
        for _ in range(rng.choice((0, 1, 1, 2))):
            clock.now += rng.randrange(1, 30) * DAY
            if rng.random() < 0.5:
                state = await self.send(
                    self.ours.message(state, MT.CASE_UPDATE, kind=UpdateKind.FOLLOW_UP, summary=NOTE_TH)
                )
            else:
                state = self.receive(
                    self._from_them(state, MT.CASE_UPDATE, kind=UpdateKind.FOLLOW_UP, summary=NOTE_LO)
                )
            count += 1
        return count


def build(directory: Path, identity: AgencyIdentity, count: int) -> dict[str, float]:
    """`count` cases in a new case store in `directory`; bounded by `BUILD_SECONDS`."""
    started = time.perf_counter()
    deadline = started + BUILD_SECONDS
    messages = 0

    async def play(store: CaseStore) -> None:
        nonlocal messages
        builder = CaseBuilder(store)
        for n in range(count):
            messages += await builder.case(n)
            if time.perf_counter() > deadline:
                raise SystemExit(f"building took over {BUILD_SECONDS:.0f} s at case {n}; use fewer --cases")

    with CaseStore(directory, identity) as store:
        asyncio.run(play(store))
    return {"seconds": time.perf_counter() - started, "messages": messages}


# --- the phases, each in its own process ------------------------------------------------------


def _digest(summaries: list[Any]) -> str:
    """A fingerprint of what the index holds, to check that every path builds the same one."""
    ordered = sorted(summaries, key=lambda s: s.case_link_id)
    return hashlib.sha256(repr(ordered).encode()).hexdigest()[:16]


def _timed(work: Callable[[], Any]) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def phase_unlock(store_dir: Path, identity: AgencyIdentity, *, replayed: bool) -> dict[str, Any]:
    """Open the store and build the index as `Workspace.start` does (or, with `replayed`, as it
    did before summary rows: every thread replayed and summarised); then page and search."""

    def unlock() -> tuple[CaseStore, CaseIndex]:
        store = CaseStore(store_dir, identity)
        index = CaseIndex()
        if replayed:
            index.put_all(summarise(thread) for thread in store.threads(now=NOW))
        else:
            index.put_all(store.summaries(now=NOW))
        return store, index

    (store, index), seconds, cpu = _timed(unlock)
    peak = peak_rss_bytes()
    today = region_today(NOW)
    first, first_s, _ = _timed(lambda: index.page(today))
    _, next_s, _ = _timed(lambda: index.page(today, number=2))
    hit, hit_s, _ = _timed(lambda: index.page(today, query=SEARCH_HIT))
    miss, miss_s, _ = _timed(lambda: index.page(today, query=SEARCH_MISS))
    found = {
        "seconds": seconds, "cpu_seconds": cpu, "peak_rss": peak, "cases": len(index),
        "first_page_s": first_s, "next_page_s": next_s, "search_hit_s": hit_s, "search_miss_s": miss_s,
        "hits": hit.total, "misses": miss.total, "overdue": sum(r.overdue for r in first.rows),
        "digest": _digest([r.summary for r in index.page(today, size=MAX_CASES).rows]),
    }  # fmt: skip
    store.close()
    return found


def phase_floor(store_dir: Path, identity: AgencyIdentity, *, messages: bool) -> dict[str, Any]:
    """The floor: select every sealed row the path reads and decrypt it, nothing else (the case
    rows, and with `messages` the message rows too)."""

    def decrypt_all() -> int:
        db = sqlite3.connect(store_dir / DATABASE_NAME)
        key = record_key(db, identity)
        total = 0
        for case_id, sealed in db.execute("SELECT case_id, sealed FROM cases"):
            total += len(open_record(key, sealed, b"case\x00" + case_id))
        if messages:
            for seq, case_id, message_key, sealed in db.execute("SELECT * FROM messages"):
                ad = b"message\x00" + case_id + seq.to_bytes(8, "big") + message_key
                total += len(open_record(key, sealed, ad))
        db.close()
        return total

    plaintext, seconds, cpu = _timed(decrypt_all)
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss": peak_rss_bytes(), "plaintext": plaintext}


def phase_keystore(keystore: Path) -> dict[str, Any]:
    """The passphrase: the agency keystore opened under the default KDF profile."""
    _, seconds, cpu = _timed(lambda: load_agency(keystore, PASSPHRASE))
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss": peak_rss_bytes()}


def run_phase(phase: str, work: Path) -> dict[str, Any]:
    identity = AgencyIdentity.parse((work / "identity").read_bytes())
    before = peak_rss_bytes()
    if phase == "keystore":
        found = phase_keystore(work / "agency.keystore")
    elif phase.startswith("floor"):
        found = phase_floor(work / "store", identity, messages=phase == "floor-messages")
    else:
        store_dir = work / ("store" if phase != "migrate" else "old")
        found = phase_unlock(store_dir, identity, replayed=phase == "replay")
    found["peak_rss"] -= before
    return found


def _in_subprocess(phase: str, work: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.desk_unlock_bench", "--phase", phase, "--work", str(work)],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    found: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return found


# --- the run ----------------------------------------------------------------------------------

PHASES = ("floor-summaries", "unlock", "floor-messages", "replay", "migrate", "keystore")


def _prepare(work: Path, cases: int) -> None:
    identity = create_agency(TH, "กรมพัฒนาสังคมและสวัสดิการ", NOW)
    (work / "identity").write_bytes(identity.encode())
    os.chmod(work / "identity", 0o600)
    save_identity(work / "agency.keystore", identity, PASSPHRASE, DEFAULT_PROFILE)
    made = build(work / "store", identity, cases)
    size = sum(p.stat().st_size for p in (work / "store").glob(DATABASE_NAME + "*"))
    print(
        f"built {cases} cases, {made['messages']} messages in {made['seconds']:.1f} s "
        f"({made['seconds'] / cases * 1e3:.1f} ms a case); store {size / 2**20:.1f} MiB"
    )


def _fresh_old_copy(work: Path) -> None:
    """The built store as schema 1 wrote it, for the migrate phase (made again every round)."""
    shutil.rmtree(work / "old", ignore_errors=True)
    shutil.copytree(work / "store", work / "old", ignore=shutil.ignore_patterns("outbox"))
    as_schema_1(work / "old" / DATABASE_NAME, AgencyIdentity.parse((work / "identity").read_bytes()))


def _report(results: dict[str, list[dict[str, Any]]], cases: int) -> None:
    def best(phase: str, key: str = "seconds") -> float:
        return min(float(r[key]) for r in results[phase])

    def median(phase: str, key: str = "seconds") -> float:
        return statistics.median(float(r[key]) for r in results[phase])

    def mib(phase: str) -> str:
        return f"{max(r['peak_rss'] for r in results[phase]) / 2**20:.1f} MiB"

    for phase in PHASES:
        print(
            f"{phase:16} best {best(phase):7.3f} s  median {median(phase):7.3f} s  "
            f"cpu {best(phase, 'cpu_seconds'):7.3f} s  peak memory above start {mib(phase)}"
        )
    unlock = results["unlock"][0]
    print(
        f"after unlock ({cases} cases): first inbox page {median('unlock', 'first_page_s') * 1e3:.1f} ms, "
        f"next page {median('unlock', 'next_page_s') * 1e3:.2f} ms, search over every case "
        f"{median('unlock', 'search_hit_s') * 1e3:.1f} ms ({unlock['hits']} found), "
        f"{median('unlock', 'search_miss_s') * 1e3:.1f} ms (none found)"
    )
    print(f"ratio unlock / floor (decrypt every case row): {best('unlock') / best('floor-summaries'):.1f}")
    print(
        f"ratio replayed unlock / floor (decrypt every case and message row): "
        f"{best('replay') / best('floor-messages'):.1f}"
    )
    print(f"replayed unlock / unlock: {best('replay') / best('unlock'):.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--cases", type=int, default=10_000, help=f"1..{MAX_CASES:,}")
    parser.add_argument("--rounds", type=int, default=3, help=f"1..{MAX_ROUNDS}, phases interleaved")
    parser.add_argument("--dir", help="where to build the store (default: the system temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the built store and print where")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase is not None:
        print(json.dumps(run_phase(args.phase, Path(args.work))))
        return 0
    if not 1 <= args.cases <= MAX_CASES or not 1 <= args.rounds <= MAX_ROUNDS:
        parser.error(f"--cases 1..{MAX_CASES} and --rounds 1..{MAX_ROUNDS}")
    work = Path(tempfile.mkdtemp(prefix="casebridge-desk-unlock-", dir=args.dir))
    try:
        print(f"{os.cpu_count()} cores; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        _prepare(work, args.cases)
        results: dict[str, list[dict[str, Any]]] = {phase: [] for phase in PHASES}
        for round_ in range(args.rounds):
            _fresh_old_copy(work)
            order = PHASES[round_ % len(PHASES) :] + PHASES[: round_ % len(PHASES)]
            for phase in order:
                results[phase].append(_in_subprocess(phase, work))
            digests = {results[p][-1]["digest"] for p in ("unlock", "replay", "migrate")}
            if len(digests) != 1 or results["unlock"][-1]["cases"] != args.cases:
                raise SystemExit(f"the unlock paths disagree about the cases: {digests}")
            print(
                f"round {round_ + 1}: " + ", ".join(f"{p} {results[p][-1]['seconds']:.3f} s" for p in PHASES)
            )
        _report(results, args.cases)
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
