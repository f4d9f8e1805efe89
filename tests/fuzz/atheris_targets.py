"""Coverage-guided fuzzing (atheris, libFuzzer) of the same targets and properties as the hypothesis tests.

Usage (``make fuzz`` runs each target for 100,000 inputs)::

    .venv/bin/python -m tests.fuzz.atheris_targets TARGET -runs=100000 [libFuzzer options]

TARGET is one of: xml, stream, sasl, certfacts, bosh. The corpus lives in ``var/fuzz/corpus/TARGET`` (seeded
with the tokens of ``strategies.TOKENS`` and real logins), crashers in ``var/fuzz/TARGET-crash-*``: a crasher
found is kept as an ``@example`` or a plain test in ``tests/fuzz/test_fuzz_*.py``, and the code it crashes is
fixed. A hang is libFuzzer's ``-timeout`` (10 s by default here).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xmppauth.settings")

# Coverage feedback from our code only (instrumenting all of Django takes minutes): the pure layers first,
# then, once Django's apps are loaded, the BOSH adapter.
with atheris.instrument_imports(include=["transport.xmpp", "certauth.pki", "certauth.identity"]):
    import certauth.identity  # noqa: E402, F401
    import certauth.pki  # noqa: E402, F401
    import transport.xmpp  # noqa: E402, F401

import django  # noqa: E402

django.setup()

with atheris.instrument_imports(include=["transport.http.bosh"]):
    import transport.http.bosh  # noqa: E402, F401

from tests.fuzz import harness  # noqa: E402
from tests.fuzz.strategies import TOKENS  # noqa: E402
from tests.fuzz.test_fuzz_bosh import check_request  # noqa: E402
from tests.fuzz.test_fuzz_certfacts import facts_or_value_error, real_certificate_der  # noqa: E402
from tests.fuzz.test_fuzz_sasl import sasl_outcome  # noqa: E402
from tests.fuzz.test_fuzz_stream import parse_all  # noqa: E402

harness.USE_ALARM = False  # libFuzzer's -timeout owns SIGALRM

MODES = ("tls", "starttls", "starttls_required", "none")


def chunks_of(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at ``cuts`` (taken modulo its length), as TCP may deliver it."""
    bounds = [0, *sorted(cut % (len(data) + 1) for cut in cuts), len(data)]
    return [data[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]


def fuzz_xml(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    framed = provider.ConsumeBool()
    parse_all(provider.ConsumeBytes(len(data)), framed)


def fuzz_stream(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    mode = MODES[provider.ConsumeIntInRange(0, len(MODES) - 1)]
    start = provider.ConsumeIntInRange(0, 3)  # 0: nothing, 1: a header, 2: a login, 3: a WebSocket login
    framing = "websocket" if start == 3 else "stream"
    prefix = [[], [harness.HEADER], harness.login_prefix(), harness.login_prefix(framed=True)][start]
    settings = harness.settings_for("tls" if start >= 2 else mode, framing=framing)
    cuts = [provider.ConsumeUInt(2) for _ in range(provider.ConsumeIntInRange(0, 8))]
    tail = provider.ConsumeBytes(len(data))
    chunks = chunks_of(tail, cuts)
    conn, transcript = harness.drive(settings, [*prefix, *chunks])
    harness.check_transcript(conn, transcript)
    if start == 0 and mode == "tls":  # how the bytes are cut changes nothing
        _, whole = harness.drive(settings, [tail])
        harness.assert_cut_changes_nothing(whole, transcript)


def fuzz_sasl(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    response = provider.ConsumeBool()
    text = provider.ConsumeUnicodeNoSurrogates(len(data))
    if any(ord(c) < 0x20 or c in "\ufffe\uffff" for c in text):
        return  # not XML text at all: the XML target covers those
    sasl_outcome(text, response)


def fuzz_certfacts(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    if provider.ConsumeBool():
        facts_or_value_error(provider.ConsumeBytes(len(data)))
        return
    der = bytearray(real_certificate_der())  # mutate a real certificate at the places chosen
    for _ in range(provider.ConsumeIntInRange(1, 8)):
        position = provider.ConsumeIntInRange(0, len(der) - 1)
        der[position] = provider.ConsumeInt(1) & 0xFF
    facts_or_value_error(bytes(der))


def fuzz_bosh(data: bytes) -> None:
    check_request(data)


TARGETS = {
    "xml": fuzz_xml,
    "stream": fuzz_stream,
    "sasl": fuzz_sasl,
    "certfacts": fuzz_certfacts,
    "bosh": fuzz_bosh,
}


def seed(target: str, corpus: Path) -> None:
    """Seed an empty corpus with the XMPP tokens and complete logins."""
    if any(corpus.iterdir()):
        return
    seeds = [*TOKENS, b"".join(harness.login_prefix()), b"".join(harness.login_prefix(framed=True))]
    if target == "certfacts":
        seeds = [b"\x01" + real_certificate_der()]
    elif target == "bosh":
        seeds = [
            b"<body xmlns='http://jabber.org/protocol/httpbind' rid='1'>" + s + b"</body>" for s in seeds
        ]
    for index, value in enumerate(seeds):
        (corpus / f"seed-{index:03d}").write_bytes(value)


def keeping_crashers(target: str, function: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """``function``, writing an input that raises to ``var/fuzz/TARGET-crash-SHA1`` before re-raising it."""

    def run(data: bytes) -> None:
        try:
            function(data)
        except BaseException:
            name = hashlib.sha1(data).hexdigest()  # noqa: S324 (a file name, not security)
            (ROOT / "var" / "fuzz" / f"{target}-crash-{name}").write_bytes(data)
            raise

    return run


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options]")
    target = sys.argv[1]
    corpus = ROOT / "var" / "fuzz" / "corpus" / target
    corpus.mkdir(parents=True, exist_ok=True)
    seed(target, corpus)
    args = [sys.argv[0], *sys.argv[2:]]
    if not any(arg.startswith("-timeout=") for arg in args):
        args.append("-timeout=10")
    if not any(arg.startswith("-artifact_prefix=") for arg in args):
        args.append(f"-artifact_prefix={ROOT / 'var' / 'fuzz'}/{target}-")
    logging.disable(logging.CRITICAL)  # refusals log a line each: millions of lines, and slow
    atheris.Setup([*args, str(corpus)], keeping_crashers(target, TARGETS[target]))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
