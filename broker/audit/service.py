"""The audit log as one broker runs it: its store, checkpoint key, checkpointer, witnesses, reader.

Built once per app (`create_app`); `running()` is its part of the app's `cleanup_ctx`: before
anything is served it checks the stored log against its latest checkpoint (refusing to start if
they disagree) and starts the checkpointer with an HTTP session for the witnesses; at cleanup,
after the stop entry was appended, it stops them and signs a last checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
from prometheus_client import CollectorRegistry

from broker.audit.checkpointer import Checkpointer
from broker.audit.integrity import verify_stored_log
from broker.audit.metrics import AuditMetrics
from broker.audit.proofs import AuditReader
from broker.audit.records import TreeHead
from broker.audit.store import audit_store
from broker.audit.witnesses import WitnessClient
from broker.clock import Clock
from broker.leadership import TaskLeader
from broker.settings import Settings
from broker.storage.interfaces import Store
from keys.identity import BrokerIdentity
from protocol.note import NoteSigner, VerifierKey

log = logging.getLogger("casebridge.broker.audit")


class AuditLogService:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        clock: Clock,
        identity: BrokerIdentity,
        registry: CollectorRegistry,
    ) -> None:
        self.origin = settings.audit_origin
        self.store = audit_store(store)
        self._signer = NoteSigner(self.origin, identity.checkpoint_key)
        self.metrics = AuditMetrics(registry)
        self.witnesses = WitnessClient(
            settings.witnesses,
            self.store,
            clock,
            self.metrics,
            timeout_seconds=float(settings.witness_timeout_seconds),
        )
        self.checkpointer = Checkpointer(
            self.store,
            origin=self.origin,
            signer=self._signer,
            clock=clock,
            interval_seconds=settings.checkpoint_interval_seconds,
            idle_seconds=settings.checkpoint_idle_seconds,
            witnesses=self.witnesses,
            metrics=self.metrics,
        )
        self.reader = AuditReader(self.store)

    @property
    def log_key(self) -> VerifierKey:
        """The checkpoint verifier key (type 0x01, name = origin) officers and witnesses pin."""
        return self._signer.vkey

    async def verify(self) -> TreeHead:
        """The start check (`broker.audit.integrity`); raises `AuditLogDamaged`."""
        return await verify_stored_log(self.store, origin=self.origin, log_key=self.log_key)

    @contextlib.asynccontextmanager
    async def running(self, leader: TaskLeader | None = None) -> AsyncIterator[aiohttp.ClientSession]:
        """Check the log, then run the checkpointer until the context exits (see module),
        signing only while `leader` leads (always when None)."""
        head = await self.verify()
        log.info(
            "audit_log_serving",
            extra={"origin": self.origin, "checkpoint_vkey": self.log_key.encode(), "size": head.size},
        )
        async with aiohttp.ClientSession() as session:
            task = asyncio.create_task(self.checkpointer.run(session, leader), name="casebridge-checkpointer")
            try:
                yield session
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await self.checkpointer.stop()
