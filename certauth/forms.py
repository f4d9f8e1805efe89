"""Admin forms for certificate actions (they only collect input; certauth.services acts)."""

from __future__ import annotations

from django import forms

from certauth import pki
from certauth.models import CertificateAuthority, RevocationReason

KEY_TYPE_CHOICES = [("ec-p256", "ECDSA P-256"), ("rsa-2048", "RSA 2048"), ("rsa-3072", "RSA 3072")]


def _our_cas():
    return CertificateAuthority.objects.exclude(encrypted_private_key=None)


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
