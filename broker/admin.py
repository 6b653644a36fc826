"""Offline operator actions straight on the store (the `casebridge broker` commands that do not
go through HTTP): register a certificate or a revocation list, and report counts.

They verify exactly as the HTTP routes do (the same `Directory`), audit as `by="offline"`, and
are meant for bootstrapping (the first operator certificate) and for a broker that is stopped:
a running broker on SQLite reads the directory at start, so it sees offline registrations after
a restart; brokers on PostgreSQL are told at once (they re-read it on every registration).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from broker.app import load_roots
from broker.service.directory import Directory
from broker.settings import Settings
from broker.storage.factory import open_store
from broker.storage.interfaces import Store
from broker.storage.records import StoreCounts

OFFLINE = "offline"


@asynccontextmanager
async def opened_store(settings: Settings, now: int) -> AsyncIterator[Store]:
    store = await open_store(settings, now=now, owner=False)
    try:
        yield store
    finally:
        await store.close()


async def _directory(settings: Settings, store: Store, now: int) -> Directory:
    directory = Directory(load_roots(settings), store.directory)
    await directory.load(now)
    return directory


@dataclass(frozen=True, slots=True)
class Registered:
    what: str
    created: bool


async def register_certificate(settings: Settings, store: Store, data: bytes, now: int) -> Registered:
    directory = await _directory(settings, store, now)
    cert, created = await directory.register_certificate(data, now, by=OFFLINE)
    roles = ", ".join(str(r) for r in cert.roles)
    return Registered(f"certificate of {cert.agency_id} ({roles}), key {cert.key_id.hex()}", created)


async def register_revocations(settings: Settings, store: Store, data: bytes, now: int) -> Registered:
    directory = await _directory(settings, store, now)
    crl, created = await directory.register_revocation_list(data, now, by=OFFLINE)
    return Registered(f"revocation list {crl.number} of {crl.country} ({len(crl.entries)} keys)", created)


async def status(store: Store) -> StoreCounts:
    return await store.delivery.counts()
