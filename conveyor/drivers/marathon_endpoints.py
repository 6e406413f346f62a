"""How both Marathon drivers reach their cluster: Marathon's API and DC/OS's own.

The single-app and the release driver talk to the same two endpoints with the same
credentials, transport and TLS settings; they are made here once so the two cannot
drift apart (a timeout or a ``/service/marathon`` prefix set in one and not the other).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from conveyor.clients.marathon import MarathonClient, tls_verify
from conveyor.config.drivers import MarathonDriverConfig


@dataclass(frozen=True)
class MarathonEndpoints:
    config: MarathonDriverConfig
    auth: httpx.Auth | None
    transport: httpx.BaseTransport | None
    verify: ssl.SSLContext | bool

    @classmethod
    def of(
        cls,
        config: MarathonDriverConfig,
        auth: httpx.Auth | None,
        transport: httpx.BaseTransport | None,
    ) -> MarathonEndpoints:
        return cls(config, auth, transport, tls_verify(config.verify_tls, config.ca_bundle))

    def marathon(self, sleep: Callable[[float], None] = time.sleep) -> MarathonClient:
        """Marathon's API; on DC/OS behind the admin router's ``/service/marathon``."""
        base = self.config.url.rstrip("/") + ("/service/marathon" if self.config.dcos else "")
        return MarathonClient(
            base,
            auth=self.auth,
            transport=self.transport,
            verify=self.verify,
            timeout_s=self.config.request_timeout_s,
            sleep=sleep,
        )

    def cluster(self) -> httpx.Client:
        """The DC/OS cluster's own API (pre-flight reads its agents through it)."""
        return httpx.Client(
            base_url=self.config.url.rstrip("/"),
            auth=self.auth,
            transport=self.transport,
            verify=self.verify,
            timeout=httpx.Timeout(self.config.request_timeout_s),
        )
