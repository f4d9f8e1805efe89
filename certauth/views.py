"""Our CAs' CRLs over plain HTTP (RFC 5280 §4.2.1.13 distribution points; DER, application/pkix-crl)."""

from django.http import Http404, HttpRequest, HttpResponse

from certauth.models import CertificateAuthority


def crl(request: HttpRequest, ca_id: int) -> HttpResponse:
    ca = CertificateAuthority.objects.filter(pk=ca_id).exclude(crl_der=None).first()
    if ca is None or not ca.crl_der:
        raise Http404("no CRL for this CA")
    return HttpResponse(bytes(ca.crl_der), content_type="application/pkix-crl")
