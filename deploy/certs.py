"""TLS certificates and SuperNode keys for a Flower deployment, made with ``cryptography``.

* :func:`make_ca` - a self-signed certificate authority (``ca.crt``, ``ca.key``).
  Its certificate goes to every SuperNode (``--root-certificates``) and to
  every machine that runs ``flwr`` (``root-certificates`` in the connection).
* :func:`make_server_cert` - the SuperLink's certificate (``server.pem``,
  ``server.key``), signed by the CA, valid for the given host names and IP
  addresses (subject alternative names). The SuperLink also talks to itself
  (its ServerApp runtime connects to ``127.0.0.1`` when it listens on
  ``0.0.0.0``), so ``localhost`` and ``127.0.0.1`` are always included.
* :func:`make_node_keys` - a SuperNode's authentication key pair: an EC key on
  the NIST P-384 curve, private key in OpenSSH PEM format (for
  ``flower-supernode --auth-supernode-private-key``), public key in OpenSSH
  format (for ``flwr supernode register``). This is the format Flower 1.41
  loads (``load_ssh_private_key`` / ``load_ssh_public_key``), the same as
  ``ssh-keygen -t ecdsa -b 384 -N ""`` writes.

This is for tests and small set-ups. For anything long-lived, use
certificates from your organisation's CA and keep ``ca.key`` offline.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ALWAYS_VALID_FOR = ("localhost", "127.0.0.1")


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    """Write ``data``; private keys are created with mode 0600 (never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if private:
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _refuse_to_replace(paths: list[Path], why: str) -> None:
    existing = [p for p in paths if p.exists()]
    if existing:
        raise FileExistsError(f"{existing[0]} exists: {why}")


def make_ca(
    out_dir: str | Path, common_name: str = "fedalign test CA", days: int = 365, overwrite: bool = False
) -> tuple[Path, Path]:
    """A self-signed CA in ``out_dir``; returns (``ca.crt``, ``ca.key``). An existing CA is replaced only
    if ``overwrite`` (every certificate it signed stops being trusted)."""
    out_dir = Path(out_dir)
    if not overwrite:
        _refuse_to_replace(
            [out_dir / "ca.crt", out_dir / "ca.key"],
            "a new CA invalidates every certificate the old one signed (pass overwrite)",
        )
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return (
        _write(out_dir / "ca.crt", cert.public_bytes(serialization.Encoding.PEM)),
        _write(out_dir / "ca.key", _key_pem(key), private=True),
    )


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*hosts, *ALWAYS_VALID_FOR]):  # keep order, drop repeats
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def make_server_cert(
    ca_dir: str | Path, hosts: list[str], out_dir: str | Path | None = None, days: int = 365, overwrite: bool = False
) -> tuple[Path, Path]:
    """The SuperLink's certificate for ``hosts`` (names and/or IPs), signed by the CA in ``ca_dir``.

    Returns (``server.pem``, ``server.key``) in ``out_dir`` (default: ``ca_dir``). An existing
    certificate or key is replaced only if ``overwrite`` (a running SuperLink keeps the old one).
    """
    ca_dir = Path(ca_dir)
    out_dir = Path(out_dir) if out_dir is not None else ca_dir
    if not overwrite:
        _refuse_to_replace(
            [out_dir / "server.pem", out_dir / "server.key"],
            "replacing the SuperLink's certificate and key (pass overwrite)",
        )
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{ca_dir / 'ca.key'} is not the elliptic-curve key make_ca writes")
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "localhost")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=days))
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    return (
        _write(out_dir / "server.pem", cert.public_bytes(serialization.Encoding.PEM)),
        _write(out_dir / "server.key", _key_pem(key), private=True),
    )


NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_node_names(out_dir: str | Path, names: list[str], overwrite: bool = False) -> None:
    """Raise (ValueError, FileExistsError) unless every name can be made into a key pair in ``out_dir``:
    a plain file name, given once, and (without ``overwrite``) no key pair of that name yet."""
    out_dir = Path(out_dir)
    for name in names:
        if not NODE_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a key name: use letters, digits, '.', '_', '-' (e.g. node-0)")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{repeated[0]} is given twice")
    if not overwrite:
        for name in names:
            _refuse_to_replace(
                [out_dir / name, out_dir / f"{name}.pub"],
                "replacing a registered SuperNode's key locks that node out. Pass --force to make "
                "a new key pair anyway (then register the new public key)",
            )


def make_node_keys(out_dir: str | Path, name: str, overwrite: bool = False) -> tuple[Path, Path]:
    """A SuperNode key pair ``<name>`` (private, OpenSSH PEM) and ``<name>.pub`` (OpenSSH).

    An existing key pair is never replaced unless ``overwrite``: a registered node would be
    locked out (its public key is what the SuperLink knows it by).
    """
    out_dir = Path(out_dir)
    check_node_names(out_dir, [name], overwrite)
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return (
        _write(out_dir / name, private, private=True),
        _write(out_dir / f"{name}.pub", public + f" {name}\n".encode()),
    )


def make_node_key_pairs(out_dir: str | Path, names: list[str], overwrite: bool = False) -> list[tuple[Path, Path]]:
    """:func:`make_node_keys` for every name, all or nothing: every name is checked before any file is
    written, and a failure while writing removes the key pairs this call made."""
    check_node_names(out_dir, names, overwrite)
    made: list[tuple[Path, Path]] = []
    try:
        for name in names:
            made.append(make_node_keys(out_dir, name, overwrite=overwrite))
    except BaseException:
        for pair in made:
            for path in pair:
                path.unlink(missing_ok=True)
        raise
    return made


def valid_for(cert_path: str | Path) -> list[str]:
    """The host names and IP addresses a certificate is valid for (its SANs)."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [*san.get_values_for_type(x509.DNSName), *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]
