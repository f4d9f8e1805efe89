"""Admin forms for certificate actions (they only collect input; certauth.services acts)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from django import forms
from django.conf import settings

from accounts.models import Domain
from certauth import pki
from certauth.models import CertificateAuthority, RevocationReason
from certauth.pins import PinError, normalise_fingerprint
from transport.xmpp.jid import InvalidJid, normalise_domain

KEY_TYPE_CHOICES = [("ec-p256", "ECDSA P-256"), ("rsa-2048", "RSA 2048"), ("rsa-3072", "RSA 3072")]


def _our_cas():
    return CertificateAuthority.objects.exclude(encrypted_private_key=None)


def _hosted_domains() -> set[str]:
    """Names a CA's allowed domains may list: the config's ``[general] hosts`` and every ``Domain`` row
    (enabled or not). Wider than what is hosted (``accounts.domains``: config hosts minus disabled rows), so
    a limit naming a domain disabled for now stays valid."""
    names = set(settings.XMPP.hosts) | set(Domain.objects.values_list("name", flat=True))
    hosted: set[str] = set()
    for name in names:
        try:
            hosted.add(normalise_domain(name))
        except InvalidJid:
            continue
    return hosted


def clean_allowed_domains(names: Iterable[str]) -> list[str]:
    """A CA's allowed domains as stored: normalised (RFC 7622 §3.2, lower case), IDNA-encodable, hosted.

    ``forms.ValidationError`` naming every entry that is not; duplicates are dropped, order is kept.
    """
    hosted: set[str] | None = None
    domains: list[str] = []
    errors: list[str] = []
    for name in names:
        try:
            domain = normalise_domain(name)
            domain.encode("idna")  # RFC 5890: must have an A-label form (labels of 1..63 octets)
        except (InvalidJid, UnicodeError) as exc:
            errors.append(f"{name!r} is not a domain name ({exc})")
            continue
        if hosted is None:
            hosted = _hosted_domains()
        if domain not in hosted:
            listed = ", ".join(sorted(hosted)) or "none"
            errors.append(f"{domain!r} is not a hosted domain (hosted: {listed})")
        elif domain not in domains:
            domains.append(domain)
    if errors:
        raise forms.ValidationError(errors)
    return domains


class AllowedDomainsField(forms.CharField):
    """``CertificateAuthority.allowed_domains`` typed as names separated by commas or spaces."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("label", "Allowed domains")
        kwargs.setdefault(
            "help_text",
            "Hosted domains this CA may vouch for, separated by commas or spaces; "
            "empty: every hosted domain. A certificate of this CA (or of a CA below it) asserting a JID in "
            "another domain is refused with not-authorized.",
        )
        super().__init__(**kwargs)

    def prepare_value(self, value: object) -> object:
        return ", ".join(value) if isinstance(value, list) else value

    def to_python(self, value: object) -> list[str]:  # type: ignore[override]
        text = super().to_python(value)
        return [name for name in re.split(r"[\s,]+", text) if name]

    def clean(self, value: object) -> list[str]:
        return clean_allowed_domains(super().clean(value))


class CertificateAuthorityForm(forms.ModelForm):
    """The CA change page: its name, whether it is trusted, and the domains it may vouch for."""

    allowed_domains = AllowedDomainsField()

    class Meta:
        model = CertificateAuthority
        fields = ["name", "trusted_for_client_auth", "allowed_domains"]


class IssueCertificateForm(forms.Form):
    ca = forms.ModelChoiceField(
        queryset=CertificateAuthority.objects.none(),
        required=False,
        empty_label="our oldest CA",
        label="Issuing CA",
    )
    key_type = forms.ChoiceField(choices=KEY_TYPE_CHOICES, initial="ec-p256")
    days = forms.IntegerField(min_value=1, max_value=3650, initial=365, label="Validity (days)")
    common_name = forms.CharField(required=False, max_length=64, help_text="Optional subject CN.")
    output = forms.ChoiceField(
        choices=[
            ("p12", "PKCS#12 (.p12) for import into clients"),
            ("p12-legacy", "PKCS#12 with legacy 3DES encryption (older macOS keychains)"),
            ("pem", "PEM: certificate, CA and encrypted private key"),
        ],
        initial="p12",
    )
    password = forms.CharField(
        widget=forms.PasswordInput,
        min_length=pki.MIN_PASSWORD_LENGTH,
        help_text=(
            f"Protects the .p12 / the PEM private key; at least {pki.MIN_PASSWORD_LENGTH} characters."
            " Not stored."
        ),
    )
    password_again = forms.CharField(widget=forms.PasswordInput)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["ca"].queryset = _our_cas()

    def clean(self) -> dict:
        data = super().clean()
        if data.get("password") != data.get("password_again"):
            raise forms.ValidationError("The two passwords differ.")
        return data


class SignCsrForm(forms.Form):
    ca = forms.ModelChoiceField(
        queryset=CertificateAuthority.objects.none(),
        required=False,
        empty_label="our oldest CA",
        label="Issuing CA",
    )
    csr_file = forms.FileField(required=False, label="CSR file", help_text="A PEM .csr file, or paste below.")
    csr = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 12, "cols": 70}),
        label="CSR (PEM)",
        help_text="The xmppAddr will be the account's JID, whatever the CSR asks for.",
    )
    days = forms.IntegerField(min_value=1, max_value=3650, initial=365, label="Validity (days)")

    MAX_CSR_BYTES = 64 * 1024

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["ca"].queryset = _our_cas()

    def clean(self) -> dict:
        data = super().clean()
        upload = data.get("csr_file")
        if upload is not None:
            if upload.size > self.MAX_CSR_BYTES:
                raise forms.ValidationError("The CSR file is larger than 64 KiB.")
            data["csr"] = upload.read().decode("ascii", errors="replace")
        if not data.get("csr"):
            raise forms.ValidationError("Upload a CSR file or paste one.")
        return data


class PemImportForm(forms.Form):
    pem = forms.CharField(widget=forms.Textarea(attrs={"rows": 14, "cols": 70}), label="Certificate (PEM)")

    def clean_pem(self) -> bytes:
        data = self.cleaned_data["pem"].encode()
        try:
            pki.load_certificate(data)
        except ValueError as exc:
            raise forms.ValidationError(f"Not a single PEM certificate: {exc}") from exc
        return data


class ImportCaForm(PemImportForm):
    name = forms.CharField(required=False, max_length=200, help_text="Default: the certificate's CN.")
    trusted_for_client_auth = forms.BooleanField(required=False, initial=True)
    allowed_domains = AllowedDomainsField()


class ImportCertificateForm(PemImportForm):
    account_jid = forms.CharField(
        required=False,
        label="Account JID",
        help_text="The account it belongs to (needed by the db auth method).",
    )


class RevokeForm(forms.Form):
    reason = forms.ChoiceField(
        choices=[c for c in RevocationReason.choices if c[0] != RevocationReason.CERTIFICATE_HOLD],
        initial=RevocationReason.UNSPECIFIED,
    )


class PinSelfSignedForm(forms.Form):
    """Pin a self-signed certificate to an account (``selfsigned_peer``): upload or paste it, or give its
    SHA-256 fingerprint. Exactly one of the three."""

    certificate_file = forms.FileField(
        required=False, label="Certificate file", help_text="The self-signed certificate (PEM or DER)."
    )
    pem = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 10, "cols": 70}), label="or paste it (PEM)"
    )
    fingerprint = forms.CharField(
        required=False,
        max_length=200,
        label="or its SHA-256 fingerprint",
        help_text="64 hexadecimal digits; colons and spaces are ignored (openssl x509 -fingerprint -sha256).",
    )

    MAX_CERTIFICATE_BYTES = 64 * 1024

    def clean_fingerprint(self) -> str | None:
        text = self.cleaned_data.get("fingerprint", "").strip()
        if not text:
            return None
        try:
            return normalise_fingerprint(text)
        except PinError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean(self) -> dict:
        data = super().clean()
        upload = data.get("certificate_file")
        raw: bytes | None = None
        if upload is not None:
            if upload.size > self.MAX_CERTIFICATE_BYTES:
                raise forms.ValidationError("The certificate file is larger than 64 KiB.")
            raw = upload.read()
        elif data.get("pem"):
            raw = data["pem"].encode()
        fingerprint_given = bool(data.get("fingerprint")) or "fingerprint" in self.errors
        if (raw is not None) + fingerprint_given != 1:
            raise forms.ValidationError("Give one of: a certificate file, a pasted one, a fingerprint.")
        data["certificate"] = None
        if raw is not None:
            try:
                data["certificate"] = pki.load_certificate(raw)
            except ValueError as exc:
                raise forms.ValidationError(f"Not a single certificate: {exc}") from None
        return data
