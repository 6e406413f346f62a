"""Pre-flight and placement checks run around an environment's deploy."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from conveyor.config.base import SecretRef, StrictModel


class AgentVmSelector(StrictModel):
    """Which VMs are the DC/OS agents: by folder, name pattern or custom attribute."""

    folder: str | None = None
    name_pattern: str | None = None
    custom_attribute: str | None = None
    custom_attribute_value: str | None = None


class VSphereConfig(StrictModel):
    url: str = Field(pattern=r"^https://")
    username: str
    password: SecretRef
    ca_bundle: Path | None = None
    thumbprint: str | None = None
    datacenter: str | None = None
    cluster: str
    agent_vms: AgentVmSelector = Field(default_factory=AgentVmSelector)
    datastore_min_free_pct: float = Field(default=10, ge=0, le=100)
    warnings_block: bool = False
    # Spread after deploy: instances must run on at least this many ESXi hosts
    # (unset: 2 when there are 2 or more instances).
    min_hosts: int | None = Field(default=None, ge=1)
    request_timeout_s: float = Field(default=30, gt=0)
    # Objects per RetrievePropertiesEx page; large enough that 1,000 VMs are one page.
    page_size: int = Field(default=5000, ge=100)


class PreflightConfig(StrictModel):
    dcos: bool = False
    vsphere: VSphereConfig | None = None
