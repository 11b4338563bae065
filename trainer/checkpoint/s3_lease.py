"""S3Storage's RunLock (no lock dies with a process there): a run lives while its lease is fresh."""

from __future__ import annotations

import re
import threading
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from trainer.metrics import warn
from trainer.shared_files import LockState

LEASE_SECONDS = 60.0
RENEW_SECONDS = 15.0
LEASE_PATTERN = re.compile(r"^\.run-(?P<run>[0-9a-f]+)\.lease$")


class Lease:
    def __init__(self, client: Any, bucket: str, key: str) -> None:
        self.client, self.bucket, self.key = client, bucket, key
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def renew(self) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key, Body=b"")

    def acquire(self) -> LockState:
        """Always "held": each run's lease is its own."""
        self.renew()
        self.thread = threading.Thread(target=self.keep, name="checkpoint-lease", daemon=True)
        self.thread.start()
        return "held"

    def keep(self) -> None:
        failing = False
        while not self.stopped.wait(RENEW_SECONDS):
            try:
                self.renew()
                failing = False
            except (ClientError, BotoCoreError) as error:
                if not failing:
                    warn(f"cannot renew s3://{self.bucket}/{self.key}: {error}")
                failing = True

    def release(self, remove: bool = False) -> None:
        """An unreachable store is a warning, not an error: the lease goes stale in LEASE_SECONDS anyway."""
        if self.thread is None:
            return
        self.stopped.set()
        self.thread.join()
        self.thread = None
        if remove:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=self.key)
            except (ClientError, BotoCoreError) as error:
                warn(f"cannot delete s3://{self.bucket}/{self.key}: {error}")
