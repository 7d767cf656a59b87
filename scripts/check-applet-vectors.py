#!/usr/bin/env python3
"""Checks the authenticator applet's worked examples with an independent implementation.

The golden bytes of docs/stk-applet-protocol.md §7 and of
sim-applet-model/tests/applet_round_trip.rs (`worked_example_bytes_are_the_documented_ones`,
`concatenated_worked_example_is_the_documented_one`) were printed by the project's own Rust
code. This script rebuilds them from the inputs the documentation states (keys, counters,
transaction id, challenge, texts), following only the specification text:

- the request and answer layouts and the answer MAC: docs/stk-applet-protocol.md §2, §3, §6;
- TS 102 225 / TS 31.115 command and response packets (SPI, KIc, KID, TAR, CNTR, PCNTR,
  padding, CC, ciphering): shared/docs/protocol-notes.md §3, §4;
- the SIM toolkit commands and terminal response: protocol-notes.md §5 and the dialog of
  docs/stk-applet-protocol.md §4.

Cryptography comes from the PyPI package `cryptography` (AES-CBC, AES-CMAC, 3DES). Before the
project's bytes are checked, the packet code is run against vectors published by others
(RFC 4493, osmocom pySim's test_ota.py as quoted in protocol-notes.md §4), so that a mistake here
is not mistaken for one in the project.

The expected hex strings are parsed out of the doc and the Rust test (not copied here), and so
are the example inputs; the inputs stated by the doc and those used by the test are compared
too. Exit status: 0 all checks passed, 1 a mismatch (a diff is printed), 2 the files could not be
parsed (the message says what was not found).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

try:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.cmac import CMAC
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit(
        "check-applet-vectors: the Python package `cryptography` is missing; run "
        "scripts/install-peers.sh (load-tests/tests/peers/python/requirements.txt)"
    )
try:  # cryptography >= 43 keeps 3DES among the "decrepit" algorithms
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - older cryptography
    TripleDES = algorithms.TripleDES

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "stk-applet-protocol.md"
TEST = ROOT / "sim-applet-model" / "tests" / "applet_round_trip.rs"
# Outside the repository in some checkouts; only used to confirm the copied pySim vectors.
NOTES = ROOT.parent / "shared" / "docs" / "protocol-notes.md"


class ParseError(Exception):
    pass


def rel(p: Path) -> str:
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


# =============================================================================================
# Primitives (cryptography package)
# =============================================================================================


def aes_cbc_encrypt(key: bytes, data: bytes) -> bytes:
    assert len(data) % 16 == 0
    enc = Cipher(algorithms.AES(key), modes.CBC(bytes(16))).encryptor()
    return enc.update(data) + enc.finalize()


def aes_cbc_decrypt(key: bytes, data: bytes) -> bytes:
    dec = Cipher(algorithms.AES(key), modes.CBC(bytes(16))).decryptor()
    return dec.update(data) + dec.finalize()


def aes_cmac(key: bytes, data: bytes) -> bytes:
    c = CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


def _tdes_key(key: bytes) -> bytes:
    # 2-key 3DES K1 K2 is 3-key K1 K2 K1 (avoids the library's deprecation warning).
    return key + key[:8] if len(key) == 16 else key


def tdes_cbc_encrypt(key: bytes, data: bytes) -> bytes:
    assert len(data) % 8 == 0
    enc = Cipher(TripleDES(_tdes_key(key)), modes.CBC(bytes(8))).encryptor()
    return enc.update(data) + enc.finalize()


def tdes_cbc_decrypt(key: bytes, data: bytes) -> bytes:
    dec = Cipher(TripleDES(_tdes_key(key)), modes.CBC(bytes(8))).decryptor()
    return dec.update(data) + dec.finalize()


# =============================================================================================
# TS 102 225 secured packets, from protocol-notes.md §4
# =============================================================================================


@dataclass(frozen=True)
class Spi:
    """SPI octets 1 and 2, bit numbers as in the spec (bit 1 = least significant)."""

    b1: int
    b2: int

    @property
    def integrity(self) -> int:  # 00 none, 01 RC, 10 CC, 11 DS
        return self.b1 & 0b11

    @property
    def ciphering(self) -> bool:
        return bool(self.b1 & 0b100)

    @property
    def counter_mode(self) -> int:  # 00 none, 01 not checked, 10 higher, 11 exactly one higher
        return (self.b1 >> 3) & 0b11

    @property
    def por(self) -> int:  # 00 none, 01 required, 10 only on error
        return self.b2 & 0b11

    @property
    def por_integrity(self) -> int:
        return (self.b2 >> 2) & 0b11

    @property
    def por_ciphered(self) -> bool:
        return bool(self.b2 & 0b10000)

    @property
    def por_by_sms_submit(self) -> bool:
        return bool(self.b2 & 0b100000)


@dataclass(frozen=True)
class KeySet:
    """KIc/KID octets plus key values. Low nibble: bits 1-2 algorithm family (01 DES, 10 AES),
    bits 3-4 the DES mode (00 DES-CBC, 01 3DES 2-key, 10 3DES 3-key); high nibble key index."""

    kic: int
    kid: int
    kic_key: bytes
    kid_key: bytes

    @staticmethod
    def _algo(octet: int, key: bytes, what: str) -> str:
        family = octet & 0b11
        if family == 0b10:
            if len(key) != 16:
                raise ValueError(f"{what}: AES-128 key expected")
            return "AES"
        if family == 0b01:
            mode = (octet >> 2) & 0b11
            if mode == 0b01 and len(key) == 16:
                return "3DES"
            if mode == 0b10 and len(key) == 24:
                return "3DES"
            raise ValueError(f"{what} {octet:02x}: DES mode {mode:02b} not supported here")
        raise ValueError(f"{what} {octet:02x}: algorithm family {family:02b} not supported here")

    @property
    def cipher(self) -> str:
        return self._algo(self.kic, self.kic_key, "KIc")

    @property
    def mac(self) -> str:
        return self._algo(self.kid, self.kid_key, "KID")

    @property
    def block(self) -> int:
        return 16 if self.cipher == "AES" else 8

    def encrypt(self, data: bytes) -> bytes:
        if self.cipher == "AES":
            return aes_cbc_encrypt(self.kic_key, data)
        return tdes_cbc_encrypt(self.kic_key, data)

    def decrypt(self, data: bytes) -> bytes:
        if self.cipher == "AES":
            return aes_cbc_decrypt(self.kic_key, data)
        return tdes_cbc_decrypt(self.kic_key, data)

    def cc(self, data: bytes) -> bytes:
        """Cryptographic checksum, 8 octets."""
        if self.mac == "AES":
            return aes_cmac(self.kid_key, data)[:8]  # AES-CMAC truncated to 8 octets
        padded = data + bytes(-len(data) % 8)  # zero padding, not sent
        return tdes_cbc_encrypt(self.kid_key, padded)[-8:]  # last block of 3DES-CBC, IV zero


def _cc_len(integrity: int) -> int:
    if integrity == 0b00:
        return 0
    if integrity == 0b10:
        return 8
    raise ValueError(f"integrity mode {integrity:02b} (RC/DS) not supported here")


@dataclass
class PacketParts:
    """Every field of a built packet, for diagnostics."""

    fields: list  # [(name, bytes)] in wire order, plain text (before ciphering)
    wire: bytes


def command_packet(
    spi: Spi, keys: KeySet, tar: bytes, cntr: int, data: bytes, pad_octet: int = 0x00
) -> PacketParts:
    """CPL(2) CHL(1) SPI(2) KIc(1) KID(1) TAR(3) | CNTR(5) PCNTR(1) CC(8 or 0) | data | padding.
    CHL = 13 + len(CC); ciphering (CBC, IV zero) covers CNTR onwards; the CC covers CPL, CHL,
    SPI, KIc, KID, TAR, CNTR, PCNTR, data and padding."""
    cc_len = _cc_len(spi.integrity)
    chl = 13 + cc_len
    secured = 5 + 1 + cc_len + len(data)
    pcntr = -secured % keys.block if spi.ciphering else 0
    padding = bytes([pad_octet]) * pcntr
    cpl = 1 + chl + len(data) + pcntr  # everything after CPL
    head = cpl.to_bytes(2, "big") + bytes([chl, spi.b1, spi.b2, keys.kic, keys.kid]) + tar
    cntr_b = cntr.to_bytes(5, "big")
    cc = keys.cc(head + cntr_b + bytes([pcntr]) + data + padding) if cc_len else b""
    plain = cntr_b + bytes([pcntr]) + cc + data + padding
    body = keys.encrypt(plain) if spi.ciphering else plain
    fields = [
        ("CPL", head[0:2]), ("CHL", head[2:3]), ("SPI", head[3:5]), ("KIc", head[5:6]),
        ("KID", head[6:7]), ("TAR", head[7:10]), ("CNTR", cntr_b), ("PCNTR", bytes([pcntr])),
        ("CC", cc), ("data", data), ("padding", padding),
    ]
    return PacketParts(fields, head + body)


def response_packet(
    spi: Spi, keys: KeySet, tar: bytes, cntr: int, rsc: int, data: bytes, pad_octet: int = 0x00
) -> PacketParts:
    """02 71 00 | RPL(2) RHL(1) TAR(3) | CNTR(5) PCNTR(1) RSC(1) CC(8 or 0) | data | padding.
    RHL = 10 + len(CC); the PoR is secured as the command's SPI octet 2 says, with its key set;
    the response CC includes the 02 71 00 header."""
    cc_len = _cc_len(spi.por_integrity)
    rhl = 10 + cc_len
    secured = 5 + 1 + 1 + cc_len + len(data)
    pcntr = -secured % keys.block if spi.por_ciphered else 0
    padding = bytes([pad_octet]) * pcntr
    rpl = 1 + rhl + len(data) + pcntr  # everything after RPL
    udh = bytes([0x02, 0x71, 0x00])
    head = udh + rpl.to_bytes(2, "big") + bytes([rhl]) + tar
    cntr_b = cntr.to_bytes(5, "big")
    cc = keys.cc(head + cntr_b + bytes([pcntr, rsc]) + data + padding) if cc_len else b""
    plain = cntr_b + bytes([pcntr, rsc]) + cc + data + padding
    body = keys.encrypt(plain) if spi.por_ciphered else plain
    fields = [
        ("UDH", udh), ("RPL", head[3:5]), ("RHL", head[5:6]), ("TAR", head[6:9]),
        ("CNTR", cntr_b), ("PCNTR", bytes([pcntr])), ("RSC", bytes([rsc])), ("CC", cc),
        ("data", data), ("padding", padding),
    ]
    return PacketParts(fields, head + body)


def open_command_packet(packet: bytes, keys: KeySet) -> list:
    """Splits a documented packet into named fields (deciphering it), for a diff."""
    chl = packet[2]
    cc_len = chl - 13
    out = [("CPL", packet[0:2]), ("CHL", packet[2:3]), ("SPI", packet[3:5]),
           ("KIc", packet[5:6]), ("KID", packet[6:7]), ("TAR", packet[7:10])]
    body = packet[10:]
    if Spi(packet[3], packet[4]).ciphering and len(body) % keys.block == 0:
        body = keys.decrypt(body)
    pcntr = body[5] if len(body) > 5 else 0
    end = len(body) - pcntr
    out += [("CNTR", body[0:5]), ("PCNTR", body[5:6]), ("CC", body[6:6 + cc_len]),
            ("data", body[6 + cc_len:end]), ("padding", body[end:])]
    return out


def open_response_packet(ud: bytes, keys: KeySet, ciphered: bool) -> list:
    rhl = ud[5]
    cc_len = rhl - 10
    out = [("UDH", ud[0:3]), ("RPL", ud[3:5]), ("RHL", ud[5:6]), ("TAR", ud[6:9])]
    body = ud[9:]
    if ciphered and len(body) % keys.block == 0:
        body = keys.decrypt(body)
    pcntr = body[5] if len(body) > 5 else 0
    end = len(body) - pcntr
    out += [("CNTR", body[0:5]), ("PCNTR", body[5:6]), ("RSC", body[6:7]),
            ("CC", body[7:7 + cc_len]), ("data", body[7 + cc_len:end]), ("padding", body[end:])]
    return out


# =============================================================================================
# SMS user data: protocol-notes.md §3, docs/stk-applet-protocol.md §6
# =============================================================================================

ONE_SMS_PACKET = 140 - 3  # 140 octets of user data, minus UDH 02 70 00
FIRST_SEGMENT = 140 - 8  # 07 | 00 03 ref n 1 | 70 00
NEXT_SEGMENT = 140 - 6  # 05 | 00 03 ref n k


def command_sms_user_data(packet: bytes, reference: int) -> list:
    if len(packet) <= ONE_SMS_PACKET:
        return [bytes([0x02, 0x70, 0x00]) + packet]
    rest = packet[FIRST_SEGMENT:]
    chunks = [packet[:FIRST_SEGMENT]] + [
        rest[i:i + NEXT_SEGMENT] for i in range(0, len(rest), NEXT_SEGMENT)
    ]
    n = len(chunks)
    out = []
    for k, chunk in enumerate(chunks, start=1):
        if k == 1:
            out.append(bytes([0x07, 0x00, 0x03, reference, n, k, 0x70, 0x00]) + chunk)
        else:
            out.append(bytes([0x05, 0x00, 0x03, reference, n, k]) + chunk)
    return out


# =============================================================================================
# The applet's messages: docs/stk-applet-protocol.md §2 (request) and §3 (answer, MAC)
# =============================================================================================

VERSION = 0x01
AUTH_REQUEST = 0x01
AUTH_ANSWER = 0x81
ENC_GSM, ENC_UCS2 = 0x04, 0x08  # §2 "text encoding"
TAG_RP, TAG_CONSENT, TAG_CODE, TAG_QUESTION = 0x01, 0x02, 0x03, 0x04
MAX_RP, MAX_CONSENT, MAX_CODE, MAX_QUESTION, MAX_REQUEST = 64, 240, 16, 32, 370
APPROVED, APPROVED_BY_PIN = 0x00, 0x03  # §3 outcome table: approved, by a PIN (LoA3)
MAC_PREFIX = b"MCA"  # §3: 4D 43 41 | 01 | 81 | ...

# GSM 03.38 default alphabet, the part that has the same code as ASCII (enough for the examples;
# anything else is refused rather than guessed). LF and CR are 0A and 0D in the default alphabet.
_GSM_SAME_AS_ASCII = set(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 !\"#%&'()*+,-./:;<=>?\n\r"
)


def gsm7_unpacked(text: str) -> bytes:
    bad = sorted(set(c for c in text if c not in _GSM_SAME_AS_ASCII))
    if bad:
        raise ValueError(f"characters outside this script's GSM table: {bad!r}")
    return text.encode("ascii")


def ucs2(text: str) -> bytes:
    if any(ord(c) > 0xFFFF for c in text):
        raise ValueError("UCS2 has no characters beyond the BMP")
    return text.encode("utf-16-be")


def encode_text(text: str, encoding: int) -> bytes:
    return gsm7_unpacked(text) if encoding == ENC_GSM else ucs2(text)


@dataclass
class Example:
    counter: int
    reference: int
    txid: bytes
    challenge: bytes
    loa: int
    expiry: int
    encoding: int
    rp: str
    consent: str
    code: str
    pin: str | None = None


def request_bytes(ex: Example) -> bytes:
    assert len(ex.txid) == 8 and len(ex.challenge) == 16
    assert ex.loa in (2, 3) and 10 <= ex.expiry <= 600
    out = bytes([VERSION, AUTH_REQUEST]) + ex.txid + ex.challenge + bytes([ex.loa])
    out += ex.expiry.to_bytes(2, "big") + bytes([ex.encoding])
    for tag, text, limit, optional in (
        (TAG_RP, ex.rp, MAX_RP, False),
        (TAG_CONSENT, ex.consent, MAX_CONSENT, False),
        (TAG_CODE, ex.code, MAX_CODE, True),
    ):
        value = encode_text(text, ex.encoding)
        if optional and not value:
            continue
        assert len(value) <= limit, f"tag {tag:02x}: {len(value)} > {limit} octets"
        out += bytes([tag, len(value)]) + value
    assert len(out) <= MAX_REQUEST
    return out


def mac_input(cntr: int, txid: bytes, challenge: bytes, outcome: int, detail: int) -> bytes:
    return (MAC_PREFIX + bytes([VERSION, AUTH_ANSWER]) + cntr.to_bytes(5, "big") + txid
            + challenge + bytes([outcome, detail]))


def answer_bytes(k_auth: bytes, cntr: int, txid: bytes, challenge: bytes, outcome: int,
                 detail: int) -> bytes:
    mac = aes_cmac(k_auth, mac_input(cntr, txid, challenge, outcome, detail))  # full 16 octets
    return bytes([VERSION, AUTH_ANSWER]) + txid + bytes([outcome, detail]) + mac


# =============================================================================================
# SIM toolkit: protocol-notes.md §5 and the dialog of docs/stk-applet-protocol.md §4
# =============================================================================================


def tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    length = bytes([n]) if n < 0x80 else bytes([0x81, n])  # TS 102 223 BER-TLV lengths
    assert n <= 0xFF
    return bytes([tag]) + length + value


def proactive(number: int, ctype: int, qualifier: int, dest: int, *tlvs: bytes) -> bytes:
    body = tlv(0x81, bytes([number, ctype, qualifier])) + tlv(0x82, bytes([0x81, dest]))
    return tlv(0xD0, body + b"".join(tlvs))


def text_string(dcs: int, octets: bytes) -> bytes:
    return tlv(0x8D, bytes([dcs]) + octets)


DISPLAY, TERMINAL = 0x02, 0x82
DISPLAY_TEXT, GET_INPUT = 0x21, 0x23


# =============================================================================================
# Reading the doc and the Rust test
# =============================================================================================


def need(pattern: str, text: str, what: str, where: str, flags: int = 0) -> re.Match:
    m = re.search(pattern, text, flags)
    if not m:
        raise ParseError(f"{where}: could not find {what} (pattern {pattern!r})")
    return m


def section(text: str, start: str, end: str | None, where: str) -> tuple:
    """The text from the line `start` to the line `end` (excluded), and its first line number."""
    i = text.find("\n" + start + "\n")
    if i < 0:
        raise ParseError(f"{where}: no heading {start!r}")
    i += 1
    j = len(text) if end is None else text.find("\n" + end + "\n", i)
    if j < 0:
        raise ParseError(f"{where}: no heading {end!r} after {start!r}")
    return text[i:j], text.count("\n", 0, i) + 1


@dataclass
class Golden:
    name: str
    value: bytes
    source: str  # "file:line"


HEX_LINE = re.compile(r"^[0-9a-f]+$")


def doc_hex_blocks(sec: str, first_line: int) -> list:
    """[(caption, [(line, hex bytes)])] for each fenced block of a doc section."""
    lines = sec.split("\n")
    blocks, caption, i = [], [], 0
    while i < len(lines):
        if lines[i].startswith("```"):
            j = i + 1
            values = []
            while j < len(lines) and not lines[j].startswith("```"):
                s = lines[j].strip()
                if HEX_LINE.match(s) and len(s) % 2 == 0:
                    values.append((first_line + j, bytes.fromhex(s)))
                j += 1
            blocks.append((" ".join(caption).strip(), values))
            caption, i = [], j + 1
            continue
        if lines[i].strip() == "":
            caption = []
        else:
            caption.append(lines[i].strip())
        i += 1
    return blocks


def doc_goldens(blocks: list, layout: list, where: str) -> list:
    """layout: [(caption prefix, [names of the hex lines in that block])]."""
    blocks = [b for b in blocks if b[1]]
    if len(blocks) != len(layout):
        raise ParseError(
            f"{where}: {len(blocks)} code blocks with hex, expected {len(layout)}: "
            + "; ".join(repr(c[:40]) for c, _ in blocks)
        )
    out = []
    for (caption, values), (prefix, names) in zip(blocks, layout):
        if not caption.startswith(prefix):
            raise ParseError(f"{where}: block captioned {caption!r}, expected {prefix!r}...")
        if len(values) != len(names):
            raise ParseError(f"{where}: {prefix!r}: {len(values)} hex lines, expected {len(names)}")
        for name, (line, value) in zip(names, values):
            out.append(Golden(name, value, f"{rel(DOC)}:{line}"))
    return out


def key_range(m: re.Match) -> bytes:
    """`000102..0f` -> 00 01 02 ... 0f (the doc's notation for consecutive octets)."""
    start, end = bytes.fromhex(m.group(1)), int(m.group(2), 16)
    key = bytes(range(start[0], end + 1))
    if key[: len(start)] != start or len(key) != 16:
        raise ParseError(f"doc: key notation {m.group(0)!r} is not 16 consecutive octets")
    return key


def one_line(s: str) -> str:
    return re.sub(r"\s+", " ", s)


@dataclass
class DocExamples:
    keys: KeySet
    k_auth: bytes
    spi: Spi
    tar: bytes
    single: Example
    concat: Example
    goldens_single: list
    goldens_concat: list
    sizes: dict  # sizes the prose states
    limits: dict  # capacity limits the prose and the §6 table state


def read_doc() -> DocExamples:
    where = rel(DOC)
    text = DOC.read_text(encoding="utf-8")
    sec7, l7 = section(text, "## 7. Worked example", "### Concatenated example", where)
    secc, lc = section(text, "### Concatenated example", None, where)
    p7, pc = one_line(sec7), one_line(secc)

    kic_key = key_range(need(r"KIc key `([0-9a-f]{2,6})\.\.([0-9a-f]{2})`", p7, "KIc key", where))
    kid_key = key_range(need(r"KID key `([0-9a-f]{2,6})\.\.([0-9a-f]{2})`", p7, "KID key", where))
    k_auth = key_range(need(r"K_auth `([0-9a-f]{2,6})\.\.([0-9a-f]{2})`", p7, "K_auth", where))
    m = need(r"SPI `([0-9A-Fa-f]{2}) ([0-9A-Fa-f]{2})`", p7, "SPI", where)
    spi = Spi(int(m.group(1), 16), int(m.group(2), 16))
    m = need(r"KIc/KID `([0-9A-Fa-f]{2})`/`([0-9A-Fa-f]{2})`", p7, "KIc/KID", where)
    keys = KeySet(int(m.group(1), 16), int(m.group(2), 16), kic_key, kid_key)
    tar = bytes.fromhex(need(r"TAR `([0-9A-Fa-f]{6})`", p7, "TAR", where).group(1))

    def texts(p: str) -> tuple:
        return (
            need(r'RP "([^"]*)"', p, "RP name", where).group(1),
            need(r'consent "([^"]*)"', p, "consent", where).group(1),
            need(r'binding code "([^"]*)"', p, "binding code", where).group(1),
        )

    rp, consent, code = texts(p7)
    single = Example(
        counter=int(need(r"counter (\d+)", p7, "counter", where).group(1)),
        reference=0,
        txid=bytes.fromhex(need(r"txid `([0-9A-Fa-f]{16})`", p7, "txid", where).group(1)),
        challenge=(lambda m: bytes.fromhex(m.group(1)) * int(m.group(2)))(
            need(r"challenge `([0-9A-Fa-f]{2})` x (\d+)", p7, "challenge", where)),
        loa=int(need(r"LoA (\d)", p7, "LoA", where).group(1)),
        expiry=int(need(r"expiry (\d+) s", p7, "expiry", where).group(1)),
        encoding={"GSM": ENC_GSM, "UCS2": ENC_UCS2}[
            need(r"(GSM|UCS2) text", p7, "text encoding", where).group(1)],
        rp=rp, consent=consent, code=code,
        pin=need(r"PIN `(\d+)`", p7, "PIN", where).group(1),
    )
    # The concatenated example restates keys ("same keys"), counter, reference, LoA, encoding
    # and texts; txid, challenge and expiry are not restated: those of the first example.
    need(r"same keys", pc, "'same keys'", where)
    rp, consent, code = texts(pc)
    concat = Example(
        counter=int(need(r"counter (\d+)", pc, "counter", where).group(1)),
        reference=int(need(r"reference `([0-9A-Fa-f]{2})`", pc, "reference", where).group(1), 16),
        txid=single.txid, challenge=single.challenge, expiry=single.expiry,
        loa=int(need(r"LoA (\d)", pc, "LoA", where).group(1)),
        encoding={"GSM": ENC_GSM, "UCS2": ENC_UCS2}[
            need(r"LoA \d, (GSM|UCS2)", pc, "text encoding", where).group(1)],
        rp=rp, consent=consent, code=code,
    )

    goldens_single = doc_goldens(
        doc_hex_blocks(sec7, l7),
        [
            ("Request (application data", ["request"]),
            ("MT SMS user data", ["request_sms_user_data"]),
            ("DISPLAY TEXT fetched", ["display_text", "get_input", "terminal_response_pin"]),
            ("MAC input", ["mac_input", "answer"]),
            ("MO SMS user data", ["answer_sms_user_data"]),
        ],
        f"{where} §7",
    )
    goldens_concat = doc_goldens(
        doc_hex_blocks(secc, lc),
        [
            ("Request (application data", ["request"]),
            ("MT SMS user data, segments", ["segment_1", "segment_2", "segment_3"]),
        ],
        f"{where} §7 concatenated",
    )

    m = need(r"The request is (\d+) octets, the packet (\d+) \(CPL `([0-9A-Fa-f]{4})`\), sent as "
             r"(\d+) SMS of (\d+), (\d+) and (\d+) octets", pc, "concatenated sizes", where)
    sizes = {
        "single: request octets": int(need(r"application data, (\d+) octets", p7,
                                           "request size", where).group(1)),
        "single: CPL": int(need(r"CPL ([0-9A-Fa-f]{4})", p7, "CPL", where).group(1), 16),
        "single: CHL": int(need(r"CHL ([0-9A-Fa-f]{2})", p7, "CHL", where).group(1), 16),
        "single: MAC input octets": int(need(r"MAC input \((\d+) octets\)", p7,
                                             "MAC input size", where).group(1)),
        "concatenated: request octets": int(m.group(1)),
        "concatenated: packet octets": int(m.group(2)),
        "concatenated: CPL": int(m.group(3), 16),
        "concatenated: SMS": int(m.group(4)),
        "concatenated: user data octets": [int(m.group(i)) for i in (5, 6, 7)],
    }
    m = need(r"## 3\. Answer.*?(\d+) octets of PoR data", one_line(text), "answer size", where)
    sizes["answer octets (§3)"] = int(m.group(1))
    m = need(r"with K_auth over these (\d+) octets", one_line(text), "MAC input size", where)
    sizes["MAC input octets (§3)"] = int(m.group(1))
    flat = one_line(text)
    m = need(r"leaves (\d+) octets \(3DES: (\d+)\) for the request in one SMS", flat,
             "one-SMS request limit", where)
    limits = {"AES, 1 SMS: request octets (§1)": int(m.group(1)),
              "3DES, 1 SMS: request octets (§1)": int(m.group(2))}
    m = need(r"secured packet \(at most (\d+) octets with AES and CC\)", flat, "packet max", where)
    limits["largest request's packet octets (§2)"] = int(m.group(1))
    m = need(r"at most (\d+) segments per message \((\d+) octets of packet\)", flat,
             "card segment bound", where)
    limits[f"{m.group(1)} segments: packet octets (§6)"] = int(m.group(2))
    limits["_segment_bound"] = int(m.group(1))  # used to compute the line above, not checked
    rows = re.findall(r"^\| (\d) \| (\d+) \| (\d+)(?: \(protocol limit\))? \| (\d+) "
                      r"\((\d+) GSM / (\d+) UCS2", text, re.M)
    if [r[0] for r in rows] != ["1", "2", "3"]:
        raise ParseError(f"{where} §6: limits table rows for 1, 2, 3 SMS not found")
    for n, packet, request, text_octets, gsm, ucs2_chars in rows:
        limits[f"AES, {n} SMS: (packet, request, text, GSM, UCS2) (§6 table)"] = tuple(
            int(x) for x in (packet, request, text_octets, gsm, ucs2_chars))
    return DocExamples(keys, k_auth, spi, tar, single, concat, goldens_single, goldens_concat,
                       sizes, limits)


def rust_fn(text: str, name: str) -> tuple:
    m = need(r"\nfn " + name + r"\(", text, f"fn {name}", rel(TEST))
    end = text.find("\n}\n", m.start())
    return text[m.start():end], text.count("\n", 0, m.start()) + 2


def rust_bytes(body: str, field: str, where: str) -> bytes:
    m = need(field + r': \*b"((?:\\x[0-9a-fA-F]{2})+)"', body, field, where)
    return bytes(int(h, 16) for h in re.findall(r"\\x([0-9a-fA-F]{2})", m.group(1)))


def rust_str(m: re.Match) -> str:
    """A Rust string literal's text (UTF-8 source, \\x and \\n escapes)."""
    return bytes(m.group(1), "utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8")


def rust_const_strings(text: str, name: str, where: str) -> list:
    """(line, hex) of every string literal of `const NAME ... = [ ... ];`."""
    m = need(r"\nconst " + name + r"\b[^=]*= \[(.*?)\n\];", text, f"const {name}", where, re.S)
    out = []
    for s in re.finditer(r'"([^"]*)"', m.group(1)):
        out.append((text.count("\n", 0, m.start(1) + s.start()) + 1, s.group(1)))
    return out


@dataclass
class TestExamples:
    keys: tuple
    single: Example
    concat: Example
    concat_keys: tuple
    goldens_single: list
    goldens_concat: list


def read_test() -> TestExamples:
    where = rel(TEST)
    text = TEST.read_text(encoding="utf-8")

    body, line = rust_fn(text, "worked_example_bytes_are_the_documented_ones")
    w = f"{where}:{line} (worked_example_bytes_are_the_documented_ones)"
    keys = tuple(rust_bytes(body, f, w) for f in ("kic_key", "kid_key", "k_auth"))
    m = need(r"build_request_sms\(&secrets, (\d+), &req, (\w+)\)", body, "build_request_sms", w)
    enc = {"Gsm7Unpacked": ENC_GSM, "Ucs2": ENC_UCS2}
    single = Example(
        counter=int(m.group(1)), reference=int(m.group(2), 0),
        txid=rust_bytes(body, "txid", w),
        challenge=(lambda m: bytes([int(m.group(1), 16)]) * int(m.group(2)))(
            need(r"challenge: \[0x([0-9A-Fa-f]{2}); (\d+)\]", body, "challenge", w)),
        loa=int(need(r"loa: Loa::Loa(\d)", body, "loa", w).group(1)),
        expiry=int(need(r"expiry_secs: (\d+)", body, "expiry_secs", w).group(1)),
        encoding=enc[need(r"encoding: TextEncoding::(\w+)", body, "encoding", w).group(1)],
        rp=rust_str(need(r'rp_name: b"([^"]*)"', body, "rp_name", w)),
        consent=rust_str(need(r'consent: b"([^"]*)"', body, "consent", w)),
        code=rust_str(need(r'binding_code: b"([^"]*)"', body, "binding_code", w)),
        pin=need(r'initial_pin: Pin::new\(b"(\d+)"\)', body, "initial_pin", w).group(1),
    )
    consts = rust_const_strings(text, "EXPECTED", where)
    if len(consts) % 2:
        raise ParseError(f"{where}: const EXPECTED is not (name, hex) pairs")
    goldens_single = [
        Golden(consts[i][1], bytes.fromhex(consts[i + 1][1]), f"{where}:{consts[i + 1][0]}")
        for i in range(0, len(consts), 2)
    ]

    body, line = rust_fn(text, "concatenated_worked_example_is_the_documented_one")
    w = f"{where}:{line} (concatenated_worked_example_is_the_documented_one)"
    concat_keys = tuple(rust_bytes(body, f, w) for f in ("kic_key", "kid_key", "k_auth"))
    m = need(r"build_request_sms\(&secrets, (\d+), &req, (\w+)\)", body, "build_request_sms", w)
    need(r"\.\.polish_request\(0\)", body, "..polish_request(0)", w)
    base, bline = rust_fn(text, "polish_request")
    bw = f"{where}:{bline} (polish_request)"

    def const_str(name: str) -> str:
        return rust_str(need(r"\nconst " + name + r': &str = "([^"]*)";', text, name, where))

    consts_by_name = {"POLISH_RP": const_str("POLISH_RP"),
                      "POLISH_CONSENT": const_str("POLISH_CONSENT")}

    def ucs2_field(field: str) -> str:
        m = need(field + r': ucs2\((\w+|"[^"]*")\)', base, field, bw)
        arg = m.group(1)
        return arg.strip('"') if arg.startswith('"') else consts_by_name[arg]

    concat = Example(
        counter=int(m.group(1)), reference=int(m.group(2), 0),
        txid=rust_bytes(body, "txid", w),
        challenge=(lambda m: bytes([int(m.group(1), 16)]) * int(m.group(2)))(
            need(r"challenge: \[0x([0-9A-Fa-f]{2}); (\d+)\]", body, "challenge", w)),
        expiry=int(need(r"expiry_secs: (\d+)", body, "expiry_secs", w).group(1)),
        loa=int(need(r"loa: Loa::Loa(\d)", base, "loa", bw).group(1)),
        encoding=enc[need(r"encoding: TextEncoding::(\w+)", base, "encoding", bw).group(1)],
        rp=ucs2_field("rp_name"), consent=ucs2_field("consent"), code=ucs2_field("binding_code"),
    )
    goldens_concat = [
        Golden(name, bytes.fromhex(h), f"{where}:{ln}")
        for name, (ln, h) in zip(["request", "segment_1", "segment_2", "segment_3"],
                                 rust_const_strings(text, "CONCAT_EXPECTED", where))
    ]
    return TestExamples(keys, single, concat, concat_keys, goldens_single, goldens_concat)


# =============================================================================================
# Comparison and reporting
# =============================================================================================

failures: list = []


def hexdiff(a: bytes, b: bytes, la: str, lb: str) -> str:
    out = [f"      {la}: {len(a)} octets, {lb}: {len(b)} octets"]
    first = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
    out.append(f"      first difference at offset {first} (0x{first:x})")
    w = max(len(la), len(lb))
    for off in range(0, max(len(a), len(b)), 16):
        ra, rb = a[off:off + 16], b[off:off + 16]
        if ra == rb:
            continue
        marks = "".join(
            "   " if i < len(ra) and i < len(rb) and ra[i] == rb[i] else "^^ "
            for i in range(max(len(ra), len(rb)))
        )
        out.append(f"      {off:04x} {la:<{w}} {ra.hex(' ')}")
        out.append(f"      {off:04x} {lb:<{w}} {rb.hex(' ')}")
        out.append(f"      {'':4} {'':<{w}} {marks.rstrip()}")
    return "\n".join(out)


def fielddiff(rebuilt: list, documented: list) -> str:
    out = ["      field by field (documented bytes opened with the example's keys):"]
    for (name, a), (_, b) in zip(rebuilt, documented):
        flag = "  " if a == b else "!="
        out.append(f"      {flag} {name:<8} rebuilt {a.hex() or '-'}")
        if a != b:
            out.append(f"         {'':<8} document {b.hex() or '-'}")
    return "\n".join(out)


def check(title: str, rebuilt: bytes, goldens: list, explain=None) -> None:
    ok = all(g.value == rebuilt for g in goldens)
    where = ", ".join(g.source for g in goldens)
    print(f"{'OK  ' if ok else 'FAIL'} {title}: {len(rebuilt)} octets, rebuilt {'==' if ok else 'vs'} {where}")
    print(f"       {rebuilt.hex()}")
    for g in goldens:
        if g.value != rebuilt:
            failures.append(f"{title} != {g.source}")
            print(hexdiff(rebuilt, g.value, "rebuilt", g.source))
            if explain is not None:
                try:
                    print(explain(g.value))
                except Exception as e:  # a diagnostic only; the failure is already recorded
                    print(f"      (could not open the documented bytes: {e})")


def check_value(title: str, got, expected, source: str) -> None:
    ok = got == expected
    print(f"{'OK  ' if ok else 'FAIL'} {title}: {got!r}" + ("" if ok else f" != {expected!r}")
          + f" ({source})")
    if not ok:
        failures.append(f"{title}: {got!r} != {expected!r} ({source})")


# =============================================================================================
# The checks
# =============================================================================================

# Vectors published by others, to check this script's reading of the spec first.
# RFC 4493 §4, example 2 (AES-128 key, one block).
RFC4493 = ("2b7e151628aed2a6abf7158809cf4f3c", "6bc1bee22e409f96e93d7e117393172a",
           "070a16b46b4d4144f79bdd9dd04a287c")
# osmocom pySim tests/unittests/test_ota.py, as quoted in shared/docs/protocol-notes.md §4
# ("Published vectors"): TAR B00011, SPI 06 19, data 00a40004023f00, counter 0. Copied because
# the notes live outside this repository; when they are present the copies are confirmed there.
PYSIM_TAR, PYSIM_SPI, PYSIM_DATA = "b00011", (0x06, 0x19), "00a40004023f00"
PYSIM = [
    # (label, KIc, KID, KIc key, KID key, command packet)
    ("pySim 3DES command packet", 0x35, 0x35, "300102030405060708090a0b0c0d0e0f",
     "301102030405060708090a0b0c0d0e0f",
     "00201506193535b00011ae733256918d050b87c94fbfe12e4dc402f262c41cf67f2f"),
    ("pySim AES command packet", 0x22, 0x22, "200102030405060708090a0b0c0d0e0f",
     "201102030405060708090a0b0c0d0e0f",
     "00281506192222b00011e87cceebb2d93083011ce294f93fc4d8de80da1abae8c37ca3e72ec4432e5058"),
]
PYSIM_POR = ("027100001c12b000118bb989492c632529326a2f4681feb37c825bc9021c9f6d0b", 0x00, "016132")


def check_published_vectors() -> None:
    print("\n-- Published vectors (this script's primitives and packet layout) --")
    key, msg, mac = (bytes.fromhex(x) for x in RFC4493)
    check("RFC 4493 example 2 AES-CMAC", aes_cmac(key, msg), [Golden("", mac, "RFC 4493 §4")])
    notes = NOTES.read_text(encoding="utf-8") if NOTES.exists() else None
    spi = Spi(*PYSIM_SPI)
    tar, data = bytes.fromhex(PYSIM_TAR), bytes.fromhex(PYSIM_DATA)
    for label, kic, kid, kic_key, kid_key, packet in PYSIM:
        keys = KeySet(kic, kid, bytes.fromhex(kic_key), bytes.fromhex(kid_key))
        src = confirm_in_notes(notes, label, packet)
        built = command_packet(spi, keys, tar, 0, data)
        check(label, built.wire, [Golden(label, bytes.fromhex(packet), src)],
              lambda v, k=keys, b=built: fielddiff(b.fields, open_command_packet(v, k)))
    # The PoR vector: 3DES key set of the first vector, counter 0, RSC 00, data 016132.
    label, (kic_key, kid_key) = "pySim 3DES PoR", PYSIM[0][3:5]
    keys = KeySet(0x35, 0x35, bytes.fromhex(kic_key), bytes.fromhex(kid_key))
    por, rsc, data = PYSIM_POR
    src = confirm_in_notes(notes, label, por)
    built = response_packet(spi, keys, tar, 0, rsc, bytes.fromhex(data))
    check(label, built.wire, [Golden(label, bytes.fromhex(por), src)],
          lambda v: fielddiff(built.fields, open_response_packet(v, keys, spi.por_ciphered)))
    if notes is None:
        print(f"     ({rel(NOTES)} not present: the pySim copies above were not re-confirmed)")


def confirm_in_notes(notes: str | None, label: str, vector: str) -> str:
    """The source to print for a copied pySim vector; a copy the notes do not hold is a failure."""
    if notes is None:
        return "protocol-notes.md §4 (copy)"
    if vector not in notes:
        failures.append(f"{label}: the copy in this script is not in {rel(NOTES)}")
        return f"protocol-notes.md §4 (copy NOT FOUND in {rel(NOTES)})"
    return f"{rel(NOTES)} §4"


def by_name(goldens: list, name: str, where: str) -> Golden:
    found = [g for g in goldens if g.name == name]
    if len(found) != 1:
        raise ParseError(f"{where}: {len(found)} golden values named {name!r}")
    return found[0]


def check_inputs(doc: DocExamples, test: TestExamples) -> None:
    print("\n-- Inputs: what the doc states == what the test uses --")
    for label, d, t, tk in (("single", doc.single, test.single, test.keys),
                            ("concatenated", doc.concat, test.concat, test.concat_keys)):
        for field in ("counter", "reference", "txid", "challenge", "loa", "expiry", "encoding",
                      "rp", "consent", "code"):
            if label == "single" and field == "reference":
                continue  # one SMS: the doc does not need one (the test passes 0)
            dv, tv = getattr(d, field), getattr(t, field)
            if isinstance(dv, bytes):
                dv, tv = dv.hex(), tv.hex()
            said = ("not restated: the first example's"
                    if label == "concatenated" and field in ("txid", "challenge", "expiry")
                    else "as the doc states")
            check_value(f"{label} {field}, test vs doc", tv, dv, f"doc §7, {said}")
        if label == "single":
            check_value("single PIN, test vs doc", t.pin, d.pin, "doc §7")
        for name, dk, tkey in zip(("KIc key", "KID key", "K_auth"),
                                  (doc.keys.kic_key, doc.keys.kid_key, doc.k_auth), tk):
            check_value(f"{label} {name}, test vs doc", tkey.hex(), dk.hex(), "doc §7")
    spi = doc.spi
    print("\n-- The SPI and key identifiers the doc states, decoded (§1 requirements) --")
    check_value("SPI1 integrity (10 = CC)", spi.integrity, 0b10, "doc §1")
    check_value("SPI1 ciphering", spi.ciphering, True, "doc §1")
    check_value("SPI1 counter (10 = must be higher)", spi.counter_mode, 0b10, "doc §1")
    check_value("SPI2 PoR (01 = required)", spi.por, 0b01, "doc §1")
    check_value("SPI2 PoR integrity (10 = CC)", spi.por_integrity, 0b10, "doc §1")
    check_value("SPI2 PoR ciphered", spi.por_ciphered, True, "doc §1")
    check_value("SPI2 PoR via SMS-SUBMIT", spi.por_by_sms_submit, True, "doc §1")
    check_value("KIc algorithm / index", (doc.keys.cipher, doc.keys.kic >> 4), ("AES", 1), "doc §1")
    check_value("KID algorithm / index", (doc.keys.mac, doc.keys.kid >> 4), ("AES", 1), "doc §1")
    check_value("TAR", doc.tar, b"MCA", "doc §1")


def check_single(doc: DocExamples, test: TestExamples) -> dict:
    print("\n-- Worked example (doc §7, test worked_example_bytes_are_the_documented_ones) --")
    names = [g.name for g in test.goldens_single]
    doc_names = [g.name for g in doc.goldens_single]
    if names != doc_names:
        raise ParseError(f"{rel(TEST)} EXPECTED names {names} != doc §7 blocks {doc_names}")

    def gold(name: str) -> list:
        return [by_name(doc.goldens_single, name, "doc"), by_name(test.goldens_single, name, "test")]

    ex, keys, spi = doc.single, doc.keys, doc.spi
    sizes = {}

    req = request_bytes(ex)
    check("request (application data, §2)", req, gold("request"))
    sizes["single: request octets"] = len(req)

    cmd = command_packet(spi, keys, doc.tar, ex.counter, req)
    uds = command_sms_user_data(cmd.wire, 0)
    if len(uds) != 1:
        failures.append(f"single example: {len(cmd.wire)}-octet packet does not fit one SMS")
    check("MT SMS user data: 02 70 00 + command packet (CC, AES-CBC)", uds[0],
          gold("request_sms_user_data"),
          lambda v: fielddiff(cmd.fields, open_command_packet(v[3:], keys)))
    sizes["single: CPL"] = int.from_bytes(cmd.wire[:2], "big")
    sizes["single: CHL"] = cmd.wire[2]

    # §4: DISPLAY TEXT (qualifier 81) with RP LF consent LF code, then GET INPUT (qualifier 04,
    # hidden digits) "PIN:" with response length 4..8, then the terminal response with the PIN.
    # Command numbers: 01 and 02, in the order the card issues them (an assumption: §4 does not
    # state numbering).
    lf = encode_text("\n", ex.encoding)
    text = lf.join(encode_text(t, ex.encoding) for t in (ex.rp, ex.consent, ex.code))
    display = proactive(1, DISPLAY_TEXT, 0x81, DISPLAY, text_string(ex.encoding, text))
    check("DISPLAY TEXT (TS 102 223)", display, gold("display_text"))
    get_input = proactive(2, GET_INPUT, 0x04, TERMINAL,
                          text_string(ex.encoding, encode_text("PIN:", ex.encoding)),
                          tlv(0x91, bytes([4, 8])))
    check("GET INPUT (TS 102 223)", get_input, gold("get_input"))
    tr = (tlv(0x81, bytes([2, GET_INPUT, 0x04])) + tlv(0x82, bytes([0x82, 0x81]))
          + tlv(0x83, bytes([0x00])) + text_string(ENC_GSM, gsm7_unpacked(ex.pin)))
    check("TERMINAL RESPONSE with the PIN (TS 102 223)", tr, gold("terminal_response_pin"))

    mi = mac_input(ex.counter, ex.txid, ex.challenge, APPROVED, APPROVED_BY_PIN)
    check("answer MAC input (§3)", mi, gold("mac_input"))
    sizes["single: MAC input octets"] = sizes["MAC input octets (§3)"] = len(mi)
    answer = answer_bytes(doc.k_auth, ex.counter, ex.txid, ex.challenge, APPROVED,
                          APPROVED_BY_PIN)
    check("answer, approved LoA3, AES-CMAC K_auth (§3)", answer, gold("answer"))
    sizes["answer octets (§3)"] = len(answer)

    por = response_packet(spi, keys, doc.tar, ex.counter, 0x00, answer)
    check("MO SMS user data: PoR (RSC 00, CC incl. 02 71 00, AES-CBC)", por.wire,
          gold("answer_sms_user_data"),
          lambda v: fielddiff(por.fields, open_response_packet(v, keys, spi.por_ciphered)))
    return sizes


def check_concat(doc: DocExamples, test: TestExamples) -> dict:
    print("\n-- Concatenated example (doc §7, test concatenated_worked_example_is_the_documented_one) --")
    ex, keys, spi = doc.concat, doc.keys, doc.spi
    sizes = {}

    def gold(name: str) -> list:
        return [by_name(doc.goldens_concat, name, "doc"), by_name(test.goldens_concat, name, "test")]

    req = request_bytes(ex)
    check("request (application data, §2, UCS2)", req, gold("request"))
    cmd = command_packet(spi, keys, doc.tar, ex.counter, req)
    uds = command_sms_user_data(cmd.wire, ex.reference)
    documented = [by_name(doc.goldens_concat, f"segment_{k}", "doc").value for k in (1, 2, 3)]
    joined = documented[0][8:] + b"".join(s[6:] for s in documented[1:])
    check("command packet, documented segments joined (CC, AES-CBC)", cmd.wire,
          [Golden("packet", joined, "doc §7 segments 1-3 without their UDH")],
          lambda v: fielddiff(cmd.fields, open_command_packet(v, keys)))
    for k, ud in enumerate(uds, start=1):
        try:
            g = gold(f"segment_{k}")
        except ParseError:
            g = [Golden(f"segment_{k}", b"", "doc/test: no such segment")]
        check(f"MT SMS user data, segment {k} of {len(uds)} (§6 layout)", ud, g)
    if len(uds) < 3:
        failures.append(f"concatenated: rebuilt {len(uds)} segments, documented 3")
    sizes.update({
        "concatenated: request octets": len(req),
        "concatenated: packet octets": len(cmd.wire),
        "concatenated: CPL": int.from_bytes(cmd.wire[:2], "big"),
        "concatenated: SMS": len(uds),
        "concatenated: user data octets": [len(u) for u in uds],
    })
    return sizes


def check_limits(doc: DocExamples) -> None:
    """Capacities computed with the packet and segment code above (dummy keys and data), for
    the limits the doc states: largest request whose packet fits n SMS."""
    print("\n-- Limits the doc states (§1, §2, §6), computed from the packet and SMS layout --")
    aes = doc.keys
    tdes = KeySet(0x15, 0x15, bytes(range(16)), bytes(range(16, 32)))  # 3DES 2-key, index 1
    header_and_tlv_headers = 30 + 3 * 2  # §2: fixed header, RP, consent and code TLV headers

    def packet_len(keys: KeySet, request_len: int) -> int:
        return len(command_packet(doc.spi, keys, doc.tar, 1, bytes(request_len)).wire)

    def capacity(n: int) -> int:  # packet octets that n SMS carry (§6 segment layout)
        return ONE_SMS_PACKET if n == 1 else FIRST_SEGMENT + (n - 1) * NEXT_SEGMENT

    def largest_request(keys: KeySet, n: int) -> int:
        best = max(r for r in range(0, 600) if packet_len(keys, r) <= capacity(n))
        assert len(command_sms_user_data(bytes(packet_len(keys, best)), 0)) <= n
        return best

    got = {
        "AES, 1 SMS: request octets (§1)": largest_request(aes, 1),
        "3DES, 1 SMS: request octets (§1)": largest_request(tdes, 1),
        "largest request's packet octets (§2)": packet_len(aes, MAX_REQUEST),
    }
    bound = doc.limits["_segment_bound"]
    got[f"{bound} segments: packet octets (§6)"] = capacity(bound)
    for n in (1, 2, 3):
        request = min(largest_request(aes, n), MAX_REQUEST)
        text = request - header_and_tlv_headers
        got[f"AES, {n} SMS: (packet, request, text, GSM, UCS2) (§6 table)"] = (
            capacity(n), request, text, text, text // 2)
    for name, stated in doc.limits.items():
        if name.startswith("_"):
            continue
        check_value(name, got.get(name), stated, "doc")


def main() -> int:
    try:
        doc = read_doc()
        test = read_test()
    except (ParseError, OSError, KeyError, ValueError) as e:
        print(f"check-applet-vectors: {e}", file=sys.stderr)
        return 2
    print(f"Checking {rel(DOC)} §7 and {rel(TEST)} with an independent implementation "
          f"(Python cryptography)")
    try:
        check_published_vectors()
        check_inputs(doc, test)
        sizes = check_single(doc, test)
        sizes.update(check_concat(doc, test))
        check_limits(doc)
    except ParseError as e:
        print(f"check-applet-vectors: {e}", file=sys.stderr)
        return 2
    print("\n-- Sizes the doc states in prose --")
    for name, stated in doc.sizes.items():
        check_value(name, sizes.get(name), stated, "doc")
    if failures:
        print(f"\n{len(failures)} check(s) FAILED:")
        for f in failures:
            print(f"  - {f}")
        return 1
    print("\nAll applet worked-example bytes match the independent implementation.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
