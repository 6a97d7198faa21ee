#!/usr/bin/env python3
"""Independent opener of Keycast DCF files (python3 + python3-cryptography for AES only).

stdin: one line "TEK_HEX CSB_ID RAND_HEX DCF_HEX" (RAND_HEX may be "-" for empty).
Derives the DCF keys with the MIKEY PRF (RFC 3830 section 4.1.2) and the section 4.1.3 labels
(encryption 0x15798CEF, authentication 0x1B5C7973, cs_id 0), checks HMAC-SHA1 over the whole
'odrm' box against the 'odfs' signature in 'mdri', decrypts 'odda' (IV first, AES-128-CBC),
removes RFC 2630 padding and prints "content_type=... plaintext=HEX" or "bad-signature".
Written from shared/reference (facts-ietf-oma.md sections 1.6 and 8, profile P-9), not from
the Rust code.
"""
import hashlib
import hmac
import struct
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def p_sha1(s, label, n):
    out = b""
    a = label
    while len(out) < n:
        a = hmac.new(s, a, hashlib.sha1).digest()
        out += hmac.new(s, a + label, hashlib.sha1).digest()
    return out[:n]


def prf(inkey, label, n):
    pieces = [inkey[i:i + 32] for i in range(0, len(inkey), 32)] or [b""]
    out = bytes(n)
    for s in pieces:
        out = bytes(x ^ y for x, y in zip(out, p_sha1(s, label, n)))
    return out


def top_boxes(data):
    pos = 0
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        yield kind, pos, size
        pos += size


def main():
    tek_hex, csb, rand_hex, dcf_hex = sys.stdin.read().split()
    tek = bytes.fromhex(tek_hex)
    rand = b"" if rand_hex == "-" else bytes.fromhex(rand_hex)
    data = bytes.fromhex(dcf_hex)
    label = lambda c: struct.pack(">IBI", c, 0, int(csb)) + rand
    enc_key = prf(tek, label(0x15798CEF), 16)
    auth_key = prf(tek, label(0x1B5C7973), 20)
    boxes = {kind: (pos, size) for kind, pos, size in top_boxes(data)}
    opos, osize = boxes[b"odrm"]
    odrm = data[opos:opos + osize]
    mpos, msize = boxes[b"mdri"]
    odfs = data[mpos + 8:mpos + msize]
    assert odfs[4:8] == b"odfs" and odfs[12] == 1
    if not hmac.compare_digest(hmac.new(auth_key, odrm, hashlib.sha1).digest(), odfs[13:33]):
        print("bad-signature")
        return
    # odrm: header (8) + version/flags (4), then odhe and odda.
    pos = 12
    ctype = None
    enc = None
    while pos < len(odrm):
        size, kind = struct.unpack(">I4s", odrm[pos:pos + 8])
        body = odrm[pos + 8:pos + size]
        if kind == b"odhe":
            ctype = body[5:5 + body[4]].decode()
        if kind == b"odda":
            n = struct.unpack(">Q", body[4:12])[0]
            enc = body[12:12 + n]
        pos += size
    dec = Cipher(algorithms.AES(enc_key), modes.CBC(enc[:16])).decryptor()
    plain = dec.update(enc[16:]) + dec.finalize()
    pad = plain[-1]
    assert 1 <= pad <= 16 and plain[-pad:] == bytes([pad]) * pad
    print("content_type=%s plaintext=%s" % (ctype, plain[:-pad].hex()))


if __name__ == "__main__":
    main()
