"""Certificates made by the real ``openssl`` command line, the way an operator following the seed makes them.

:func:`gajim_recipe` runs the seed's "Usage example - Gajim" (MongooseIM's client certificate tutorial)
command for command; only its interactive prompts (the root key's pass phrase, the two subjects, the export
password) are answered by arguments (``GAJIM_RECIPE``).

With OpenSSL 3, ``openssl x509 -req`` without ``-extfile`` writes an X.509 **v1** certificate (no extensions),
while ``openssl req -x509`` writes a v3 CA (the ``v3_ca`` section of openssl.cnf). The other helpers vary the
recipe with the same commands: a v3 intermediate (``-extfile`` with basicConstraints), a v1 "intermediate"
(the recipe's signing command used on a CA's request), a self-signed v1 leaf or v3 root (``x509 -req -key``).

Every result is a :class:`tests.certs.Issued` read back from the files, so the listeners' test helpers
(``client_context``, ``client_files``) present it as they present ours.
"""

from __future__ import annotations

import atexit
import functools
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key, pkcs12

from certauth.verify import REASON_SELF_SIGNED_UNTRUSTED, REASON_V1_CA, REASON_V1_NOT_DIRECT
from tests.certs import Issued

ROOT_PASSPHRASE = "root key pass phrase"  # what the recipe's genrsa -des3 prompts for
P12_PASSWORD = "gajim export password"  # what pkcs12 -export prompts for ("Certificate is encrypted")


def openssl(directory: Path, *args: str) -> None:
    """Run ``openssl *args`` in ``directory``; a failure shows openssl's own words."""
    done = subprocess.run(["openssl", *args], cwd=directory, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"openssl {' '.join(args)}: {done.stdout}{done.stderr}"


def read_issued(directory: Path, name: str, issuer: Issued | None, passphrase: str | None = None) -> Issued:
    """``name.crt`` and ``name.key`` of ``directory`` as an :class:`Issued`."""
    cert = x509.load_pem_x509_certificate((directory / f"{name}.crt").read_bytes())
    password = passphrase.encode() if passphrase is not None else None
    key = load_pem_private_key((directory / f"{name}.key").read_bytes(), password)
    return Issued(cert, key, issuer)  # type: ignore[arg-type]


@dataclass(frozen=True)
class GajimFiles:
    """What the recipe leaves in its directory: the root (``rootCA.crt``, the listener's ``tls.cacertfile``)
    and the client's PKCS#12 file, read back as the client presents it."""

    directory: Path
    root: Issued
    client: Issued  # read from client.p12 with P12_PASSWORD, issued by ``root``

    @property
    def cacertfile(self) -> Path:
        return self.directory / "rootCA.crt"


# The seed's recipe as printed there (its comment dropped, one long line continued), and the arguments that
# answer each command's prompts: the pass phrase of rootCA.key, the subjects (the username as Common Name),
# the export password.
GAJIM_RECIPE = """\
openssl genrsa -des3 -out rootCA.key 4096
openssl req -x509 -new -nodes -key rootCA.key -sha256 -days 1024 -out rootCA.crt
openssl genrsa -out client.key 2048
openssl req -new -key client.key -out client.csr
openssl x509 -req -in client.csr -CA rootCA.crt -CAkey rootCA.key -CAcreateserial -out client.crt \\
  -days 500 -sha256
openssl pkcs12 -export -inkey client.key -in client.crt -out client.p12
"""


def _recipe_answers(username: str) -> list[list[str]]:
    return [
        ["-passout", f"pass:{ROOT_PASSPHRASE}"],
        ["-passin", f"pass:{ROOT_PASSPHRASE}", "-subj", "/CN=Gajim recipe root CA"],
        [],
        ["-subj", f"/CN={username}"],
        ["-passin", f"pass:{ROOT_PASSPHRASE}"],
        ["-passout", f"pass:{P12_PASSWORD}"],
    ]


def recipe_commands() -> list[list[str]]:
    """``GAJIM_RECIPE`` as argument lists, one per command."""
    return [shlex.split(line) for line in GAJIM_RECIPE.replace("\\\n", " ").splitlines()]


def gajim_recipe(directory: Path, username: str) -> GajimFiles:
    """The seed's recipe in ``directory``, with ``username`` as the client's Common Name."""
    directory.mkdir(parents=True, exist_ok=True)
    for line, answers in zip(recipe_commands(), _recipe_answers(username), strict=True):
        command, *args = line
        assert command == "openssl", line
        if args[0] == "genrsa":  # the key size is genrsa's last argument: the answers go before it
            args[-1:-1] = answers
        else:
            args += answers
        openssl(directory, *args)
    root = read_issued(directory, "rootCA", None, ROOT_PASSPHRASE)
    key, cert, _ = pkcs12.load_key_and_certificates(
        (directory / "client.p12").read_bytes(), P12_PASSWORD.encode()
    )
    assert key is not None and cert is not None
    return GajimFiles(directory, root, Issued(cert, key, root))  # type: ignore[arg-type]


def signed_by(
    directory: Path,
    name: str,
    issuer: Issued,
    issuer_name: str,
    *,
    common_name: str,
    extensions: str = "",
    passphrase: str | None = None,
    digest: str = "sha256",
) -> Issued:
    """A certificate for ``common_name`` signed by ``issuer`` (files ``issuer_name.crt``/``.key`` in
    ``directory``) with the recipe's signing command: X.509 v1 without ``extensions``, v3 with them (the
    lines of an openssl ``-extfile``)."""
    _request(directory, name, f"/CN={common_name}", 2048)
    passin = ("-passin", f"pass:{passphrase}") if passphrase is not None else ()
    openssl(
        directory,
        *("x509", "-req", "-in", f"{name}.csr", "-CA", f"{issuer_name}.crt", "-CAkey", f"{issuer_name}.key"),
        *("-CAcreateserial", "-out", f"{name}.crt", "-days", "500", f"-{digest}", *passin),
        *_extfile(directory, name, extensions),
    )
    return read_issued(directory, name, issuer)


def self_signed(
    directory: Path, name: str, *, common_name: str, extensions: str = "", bits: int = 2048, days: int = 500
) -> Issued:
    """A self-signed certificate (``openssl x509 -req -key``): X.509 v1 without ``extensions`` (a client's
    own certificate, or a v1 "root"), v3 with them (``CA_EXTENSIONS`` for a root)."""
    _request(directory, name, f"/CN={common_name}", bits)
    openssl(
        directory,
        *("x509", "-req", "-in", f"{name}.csr", "-key", f"{name}.key", "-out", f"{name}.crt"),
        *("-days", str(days), "-sha256", *_extfile(directory, name, extensions)),
    )
    return read_issued(directory, name, None)


CA_EXTENSIONS = "basicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n"
CLIENT_EXTENSIONS = "extendedKeyUsage = clientAuth\n"


def _request(directory: Path, name: str, subject: str, bits: int) -> None:
    openssl(directory, "genrsa", "-out", f"{name}.key", str(bits))
    openssl(directory, "req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)


def _extfile(directory: Path, name: str, extensions: str) -> tuple[str, ...]:
    if not extensions:
        return ()
    (directory / f"{name}.ext").write_text(extensions)
    return ("-extfile", f"{name}.ext")


@dataclass(frozen=True)
class Variants:
    """The recipe varied into the paths a v1 rule must refuse, made beside the recipe's files."""

    recipe: GajimFiles  # the recipe itself: its root and its v1 client certificate
    inter: Issued  # a v3 intermediate CA under the recipe's root
    under_inter: Issued  # a v1 leaf (CN bob) under that intermediate
    v1_inter: Issued  # a v1 "intermediate" under the root: the recipe's signing command on a CA's request
    v3_under_v1_inter: Issued  # a v3 leaf (CN carol, clientAuth) under the v1 intermediate
    self_v1: Issued  # a self-signed v1 leaf (CN erin)


def recipe_variants(files: GajimFiles) -> Variants:
    directory, root = files.directory, files.root
    inter = signed_by(
        directory,
        "inter",
        root,
        "rootCA",
        common_name="v3 intermediate",
        extensions=CA_EXTENSIONS,
        passphrase=ROOT_PASSPHRASE,
    )
    v1_inter = signed_by(
        directory, "v1inter", root, "rootCA", common_name="v1 intermediate", passphrase=ROOT_PASSPHRASE
    )
    return Variants(
        recipe=files,
        inter=inter,
        under_inter=signed_by(directory, "underinter", inter, "inter", common_name="bob"),
        v1_inter=v1_inter,
        v3_under_v1_inter=signed_by(
            directory, "v3underv1", v1_inter, "v1inter", common_name="carol", extensions=CLIENT_EXTENSIONS
        ),
        self_v1=self_signed(directory, "selfv1", common_name="erin"),
    )


# The v1 paths the listeners refuse: case -> (the Variants field, the listener's verify_mode, the reason the
# AuthEvent gives). The end-to-end tests (TCP, wss and BOSH) run each one.
REFUSED_V1_PATHS = {
    "v1_leaf_under_an_intermediate": ("under_inter", "peer", REASON_V1_NOT_DIRECT),
    "v1_leaf_under_an_intermediate_selfsigned_peer": ("under_inter", "selfsigned_peer", REASON_V1_NOT_DIRECT),
    "v3_leaf_under_a_v1_intermediate": ("v3_under_v1_inter", "peer", REASON_V1_CA),
    "self_signed_v1_leaf_under_peer": ("self_v1", "peer", REASON_SELF_SIGNED_UNTRUSTED),
}


@functools.cache
def shared_recipe() -> Variants:
    """The recipe for ``alice`` and its variants, made once per test process (a 4096-bit RSA root takes
    seconds) in a directory removed at exit."""
    directory = Path(tempfile.mkdtemp(prefix="gajim-recipe-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return recipe_variants(gajim_recipe(directory, "alice"))
