"""vCenter through pyVmomi: one session, the whole inventory in one bulk read.

Every SOAP call goes through the stub this client counts (``round_trips``), and every
pyVmomi, socket or TLS failure becomes a conveyor error in ``_translated`` alone, so a
wrong password is one ``AuthenticationFailed`` and a refused connection is transient.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
import ssl
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr
from pyVmomi import VmomiSupport, vim, vmodl
from pyVmomi.Security import ThumbprintMismatchException
from pyVmomi.SoapAdapter import SoapStubAdapter

from conveyor.clients.vsphere_inventory import Inventory, parse_inventory
from conveyor.config.preflight import VSphereConfig
from conveyor.errors import (
    AuthenticationFailed,
    ConfigError,
    ConnectFailed,
    ConveyorError,
    NotFound,
    PermissionDenied,
    Rejected,
    RequestTimeout,
    ServerError,
    TLSVerificationFailed,
)

log = logging.getLogger(__name__)

# vSphere 6.5's namespace: every vCenter from 6.5 to 8 speaks it, and it has every
# property the checks read.
API_VERSION = VmomiSupport.versionMap["vim25/6.5"]
MAX_PAGES = 10_000

_PC = vmodl.query.PropertyCollector
_PROPERTIES: dict[type, list[str]] = {
    vim.Folder: ["name", "parent"],
    vim.Datacenter: ["name", "parent"],
    vim.ClusterComputeResource: [
        "name",
        "parent",
        "overallStatus",
        "host",
        "datastore",
        "triggeredAlarmState",
    ],
    vim.HostSystem: [
        "name",
        "parent",
        "runtime.connectionState",
        "runtime.powerState",
        "runtime.inMaintenanceMode",
        "summary.hardware.numCpuCores",
        "summary.hardware.cpuMhz",
        "summary.hardware.memorySize",
        "summary.quickStats.overallCpuUsage",
        "summary.quickStats.overallMemoryUsage",
        "triggeredAlarmState",
    ],
    vim.VirtualMachine: [
        "name",
        "parent",
        "runtime.host",
        "runtime.powerState",
        "guest.toolsRunningStatus",
        "guest.hostName",
        "guest.ipAddress",
        "customValue",
        "config.template",
        "triggeredAlarmState",
    ],
    vim.Datastore: [
        "name",
        "summary.capacity",
        "summary.freeSpace",
        "summary.accessible",
        "triggeredAlarmState",
    ],
}


def normalize_thumbprint(thumbprint: str) -> str:
    """Lower-case hex without colons; SHA-1 (40) or SHA-256 (64) digits."""
    digits = thumbprint.replace(":", "").strip().lower()
    if len(digits) not in (40, 64) or any(c not in "0123456789abcdef" for c in digits):
        raise ConfigError(
            "vsphere", [f"thumbprint: expected a SHA-1 or SHA-256 hex digest, got {thumbprint!r}"]
        )
    return digits


class PinnedStub(SoapStubAdapter):
    """A SOAP stub that checks the pinned certificate digest on every connection.

    pyVmomi's own pinning only runs when CA verification fails and then turns
    verification off on the shared context, so later connections go unchecked.
    """

    def __init__(self, *, pin: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pin = pin

    def GetConnection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection = super().GetConnection()
        if self._pin is None:
            return conn
        if conn.sock is None:
            conn.connect()
        sock = conn.sock
        der = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
        algorithm = hashlib.sha1 if len(self._pin) == 40 else hashlib.sha256
        actual = algorithm(der or b"").hexdigest()
        if not hmac.compare_digest(actual, self._pin):
            conn.close()
            raise TLSVerificationFailed(
                f"vCenter {self.host}: certificate thumbprint {actual} "
                f"does not match the pinned {self._pin}"
            )
        return conn


def _ssl_context(ca_bundle: Path | None, thumbprint: str | None) -> ssl.SSLContext:
    if thumbprint is not None and ca_bundle is None:
        # The pin replaces CA verification; PinnedStub checks it on every connection.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)


def make_stub(
    url: str, *, ca_bundle: Path | None = None, thumbprint: str | None = None, timeout_s: float = 30
) -> PinnedStub:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError("vsphere", [f"url: expected https://host[:port]/sdk, got {url!r}"])
    pin = normalize_thumbprint(thumbprint) if thumbprint else None
    return PinnedStub(
        pin=pin,
        host=parts.hostname,
        port=parts.port or 443,
        path=parts.path or "/sdk",
        version=API_VERSION,
        sslContext=_ssl_context(ca_bundle, pin),
        httpConnectionTimeout=timeout_s,
        connectionPoolTimeout=60,
    )


def _tls_failure(exc: BaseException) -> bool:
    return isinstance(
        exc, ssl.SSLError | ThumbprintMismatchException
    ) or "CERTIFICATE_VERIFY_FAILED" in str(exc)


@contextmanager
def _translated(system: str, user: str) -> Iterator[None]:
    """The one boundary where pyVmomi, socket and TLS failures become conveyor errors."""
    try:
        yield
    except ConveyorError:
        raise
    except vim.fault.InvalidLogin:
        raise AuthenticationFailed(
            f"{system}: login refused for {user!r}: wrong user name or password"
        ) from None
    except vim.fault.NotAuthenticated:
        raise AuthenticationFailed(
            f"{system}: the session is not authenticated (expired or logged out)"
        ) from None
    except vim.fault.NoPermission as exc:
        raise PermissionDenied(f"{system}: {user!r} lacks privilege {exc.privilegeId}") from None
    except vmodl.fault.ManagedObjectNotFound as exc:
        raise NotFound(f"{system}: object {exc.obj} no longer exists") from None
    except vmodl.MethodFault as exc:
        raise Rejected(f"{system}: {type(exc).__name__}: {getattr(exc, 'msg', exc)}") from None
    except TimeoutError:
        raise RequestTimeout(f"{system}: no answer in time") from None
    except (ssl.SSLError, ThumbprintMismatchException) as exc:
        raise TLSVerificationFailed(
            f"{system}: TLS verification failed ({exc}); set ca_bundle to the CA that signed "
            "vCenter's certificate, or pin its thumbprint"
        ) from None
    except http.client.HTTPException as exc:
        status = int(str(exc).split()[0]) if str(exc)[:3].isdigit() else 0
        if status >= 500 or status == 0:
            raise ServerError(f"{system}: HTTP failure ({exc})", status) from None
        raise Rejected(f"{system}: HTTP {exc}") from None
    except OSError as exc:
        if _tls_failure(exc):
            raise TLSVerificationFailed(f"{system}: TLS failure ({exc})") from None
        raise ConnectFailed(f"{system}: cannot connect ({exc})") from None


class VSphereClient:
    """One vCenter session. Use as a context manager: login on enter, logout on exit."""

    def __init__(
        self,
        stub: Any,
        username: str,
        password: SecretStr,
        *,
        system: str = "vCenter",
        page_size: int = 5000,
    ) -> None:
        self.system = system
        self.username = username
        self._password = password
        self._stub = stub
        self._page_size = page_size
        self.calls: Counter[str] = Counter()
        self._content: Any = None
        self._view: Any = None
        self._count_calls_on(stub)

    @classmethod
    def from_config(cls, cfg: VSphereConfig, password: SecretStr) -> VSphereClient:
        stub = make_stub(
            cfg.url,
            ca_bundle=cfg.ca_bundle,
            thumbprint=cfg.thumbprint,
            timeout_s=cfg.request_timeout_s,
        )
        return cls(
            stub,
            cfg.username,
            password,
            system=f"vCenter {urlsplit(cfg.url).netloc}",
            page_size=cfg.page_size,
        )

    def _count_calls_on(self, stub: Any) -> None:
        # Managed objects deserialized from replies hold this very stub, so counting
        # on it sees every call, including those made through returned objects.
        invoke: Callable[..., Any] = stub.InvokeMethod

        def counted(mo: Any, info: Any, args: Any, *rest: Any, **kw: Any) -> Any:
            self.calls[info.wsdlName] += 1
            return invoke(mo, info, args, *rest, **kw)

        stub.InvokeMethod = counted

    @property
    def round_trips(self) -> int:
        return sum(self.calls.values())

    def __repr__(self) -> str:
        return f"VSphereClient({self.system!r}, user={self.username!r})"

    @property
    def content(self) -> Any:
        """The ServiceInstance content of the open session (for calls this client lacks)."""
        if self._content is None:
            raise AuthenticationFailed(
                f"{self.system}: not logged in; use the client as a context manager"
            )
        return self._content

    def login(self) -> None:
        """Open the session; a refused password raises once, never retried."""
        if self._content is not None:
            return
        with _translated(self.system, self.username):
            si = vim.ServiceInstance("ServiceInstance", self._stub)
            content = si.RetrieveContent()
            if content.sessionManager is None:
                raise Rejected(
                    f"{self.system}: the endpoint has no session manager (not a vCenter?)"
                )
            content.sessionManager.Login(self.username, self._password.get_secret_value(), None)
        self._content = content

    def close(self) -> None:
        """Log out. Best effort: a session that cannot be closed expires on its own."""
        if self._content is None:
            return
        content, view, self._content, self._view = self._content, self._view, None, None
        try:
            with _translated(self.system, self.username):
                if view is not None:
                    view.DestroyView()
                content.sessionManager.Logout()
        except ConveyorError as exc:
            log.warning("%s: logout failed: %s", self.system, exc)
        self._stub.DropConnections()

    def __enter__(self) -> VSphereClient:
        self.login()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _container_view(self) -> Any:
        if self._view is None:
            content = self._content
            self._view = content.viewManager.CreateContainerView(
                content.rootFolder, list(_PROPERTIES), True
            )
        return self._view

    def _filter_spec(self) -> Any:
        traverse = _PC.TraversalSpec(
            name="view", type=vim.view.ContainerView, path="view", skip=False
        )
        objects = [_PC.ObjectSpec(obj=self._container_view(), skip=True, selectSet=[traverse])]
        props = [_PC.PropertySpec(type=t, pathSet=p) for t, p in _PROPERTIES.items()]
        if self._content.customFieldsManager is not None:
            objects.append(_PC.ObjectSpec(obj=self._content.customFieldsManager, skip=False))
            props.append(_PC.PropertySpec(type=vim.CustomFieldsManager, pathSet=["field"]))
        return _PC.FilterSpec(objectSet=objects, propSet=props, reportMissingObjectsInResults=False)

    def inventory(self) -> Inventory:
        """Clusters, hosts, VMs and datastores in one RetrievePropertiesEx (plus its pages)."""
        content = self.content
        with _translated(self.system, self.username):
            collector = content.propertyCollector
            spec = self._filter_spec()
            result = collector.RetrievePropertiesEx(
                [spec], _PC.RetrieveOptions(maxObjects=self._page_size)
            )
            objects = list(result.objects) if result else []
            pages = 1
            while result is not None and result.token:
                if pages >= MAX_PAGES:
                    raise ServerError(f"{self.system}: more than {MAX_PAGES} result pages", 0)
                result = collector.ContinueRetrievePropertiesEx(result.token)
                objects.extend(result.objects)
                pages += 1
        return parse_inventory(objects)
