"""OpenSSH signatures over approval statements: ``ssh-keygen -Y sign`` and ``-Y verify``.

The same format git uses for SSH-signed commits, so approvers sign with the key they
already have (a file, or one held by ssh-agent) and anyone can check a decision later
with nothing but ssh-keygen and the allowed-signers list.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from conveyor.errors import SigningFailed

NAMESPACE = "conveyor-approval"
TIMEOUT_S = 30
_BEGIN, _END = "-----BEGIN SSH SIGNATURE-----", "-----END SSH SIGNATURE-----"
_FINGERPRINT_RE = re.compile(r"key (SHA256:[A-Za-z0-9+/=]+)")
_PRINCIPAL_RE = re.compile(r"^[^\s,\"]+$")


@dataclass(frozen=True)
class Signer:
    """One line of an allowed-signers file: who may sign, with which public key."""

    principals: tuple[str, ...]
    key: str  # "ssh-ed25519 AAAA..." (type and base64, no comment)
    # As written in an allowed-signers file (namespaces=, valid-after=...); keys named
    # in the pipeline file are limited to approvals.
    options: str = f'namespaces="{NAMESPACE}"'

    def line(self) -> str:
        return " ".join(p for p in (",".join(self.principals), self.options, self.key) if p)


@dataclass(frozen=True)
class Check:
    ok: bool
    fingerprint: str | None
    detail: str


def _ssh_keygen() -> str:
    found = shutil.which("ssh-keygen")
    if found is None:
        raise SigningFailed("ssh-keygen not found: install OpenSSH (Debian: openssh-client)")
    return found


def _run(args: list[str], stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            [_ssh_keygen(), *args], input=stdin, capture_output=True, timeout=TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        # A passphrase prompt with no terminal, or an agent that asks for confirmation.
        raise SigningFailed(
            f"ssh-keygen {args[0]} {args[1]} did not finish in {TIMEOUT_S}s"
        ) from None


def public_key(text: str) -> str:
    """The ``type base64`` part of an OpenSSH public key line (the comment dropped)."""
    parts = text.split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
        raise ValueError("not an OpenSSH public key (expected 'ssh-ed25519 AAAA...')")
    return f"{parts[0]} {parts[1]}"


def fingerprint(key: str) -> str:
    """``SHA256:...`` of a public key, as ssh-keygen prints it (unpadded base64 of the hash)."""
    try:
        blob = base64.b64decode(public_key(key).split()[1], validate=True)
    except binascii.Error:
        raise ValueError("not a valid public key: its base64 does not decode") from None
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def sign(message: bytes, key: Path) -> str:
    """Sign with a private key file, or with ssh-agent when ``key`` is a ``.pub`` file.

    Given a public key, ssh-keygen asks the agent (``SSH_AUTH_SOCK``) to sign with it.
    """
    if not key.is_file():
        raise SigningFailed(f"key file not found: {key}")
    proc = _run(["-Y", "sign", "-n", NAMESPACE, "-f", str(key)], message)
    if proc.returncode != 0 or _BEGIN.encode() not in proc.stdout:
        detail = proc.stderr.decode().strip().splitlines()
        raise SigningFailed(f"ssh-keygen could not sign with {key}: {' '.join(detail[-2:])}")
    return proc.stdout.decode().strip()


def normalize(signature: str) -> str:
    """The armored signature re-wrapped, so one pasted into a one-line form field still works."""
    body = signature.strip()
    if not (body.startswith(_BEGIN) and body.endswith(_END)):
        raise ValueError("not an SSH signature (expected -----BEGIN SSH SIGNATURE-----)")
    b64 = "".join(body[len(_BEGIN) : -len(_END)].split())
    lines = [b64[i : i + 70] for i in range(0, len(b64), 70)]
    return "\n".join([_BEGIN, *lines, _END])


def _verify_args(
    workdir: Path, signature: str, signers: Iterable[Signer] | None
) -> tuple[Path, Path | None]:
    sig = workdir / "statement.sig"
    sig.write_text(normalize(signature) + "\n")
    if signers is None:
        return sig, None
    allowed = workdir / "allowed_signers"
    allowed.write_text("".join(s.line() + "\n" for s in signers))
    return sig, allowed


def verify(
    message: bytes,
    signature: str,
    *,
    identity: str,
    signers: Iterable[Signer],
    at: dt.datetime | None = None,
) -> Check:
    """``ssh-keygen -Y verify``: did ``identity``, by a key of theirs on the list, sign this?

    ``at`` is the time the signature claims; keys with valid-after/valid-before in an
    allowed-signers file are judged at that time, as git does for commits.
    """
    try:
        signature = normalize(signature)
    except ValueError as exc:
        return Check(False, None, str(exc))
    with tempfile.TemporaryDirectory(prefix="conveyor-verify-") as tmp:
        sig, allowed = _verify_args(Path(tmp), signature, list(signers))
        args = ["-Y", "verify", "-f", str(allowed), "-I", identity, "-n", NAMESPACE, "-s", str(sig)]
        if at is not None:
            args += ["-O", f"verify-time={at.astimezone(dt.UTC):%Y%m%d%H%M%S}Z"]
        proc = _run(args, message)
        if proc.returncode == 0:
            found = _FINGERPRINT_RE.search(proc.stdout.decode())
            return Check(True, found.group(1) if found else None, proc.stdout.decode().strip())
        return _explain(message, sig, identity)


def _explain(message: bytes, sig: Path, identity: str) -> Check:
    """Tell a signature that does not match the statement from a key that is not theirs."""
    proc = _run(["-Y", "check-novalidate", "-n", NAMESPACE, "-s", str(sig)], message)
    if proc.returncode != 0:
        return Check(
            False,
            None,
            "the signature does not match the statement (altered after signing, or signed for "
            f"another namespace than {NAMESPACE!r})",
        )
    found = _FINGERPRINT_RE.search(proc.stdout.decode())
    key = found.group(1) if found else "an unknown key"
    return Check(False, key, f"signed with {key}, which is not a key of {identity} on the list")


def valid_principal(name: str) -> bool:
    return bool(_PRINCIPAL_RE.match(name))
