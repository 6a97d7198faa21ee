#!/usr/bin/env python3
"""Independent reader of Keycast PDCF recordings and DCF files (standard library only).

Reads a file named on the command line (or hex on stdin with "-") and prints one line per box,
indented by depth, with the fields the Rust tests check: brands, timescales, the OMA boxes
(schm, ohdr, obki, odaf, oslt, oksd, odhe, odda, odfs), tfdt, each trun sample (duration, size,
composition offset, data as hex, located through the moof-relative data offset) and mfro.
Written from ISO/IEC 14496-12 and the layouts in shared/reference/facts-ietf-oma.md section 8,
not from the Rust code.
"""
import struct
import sys

# Where the child boxes of a container start in its body.
CONTAINERS = {
    b"moov": 0, b"trak": 0, b"mdia": 0, b"minf": 0, b"dinf": 0, b"stbl": 0, b"mvex": 0,
    b"moof": 0, b"traf": 0, b"sinf": 0, b"schi": 0, b"mfra": 0, b"mdri": 0,
    b"odkm": 4, b"odrm": 4, b"stsd": 8, b"dref": 8, b"enca": 28, b"encv": 78,
}


def boxes(data, start, end):
    pos = start
    while pos < end:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        hdr = 8
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
            hdr = 16
        elif size == 0:
            size = end - pos
        if size < hdr or pos + size > end:
            raise ValueError("bad box size at %d" % pos)
        yield kind, pos, pos + hdr, pos + size
        pos += size


def lp16(b, i):
    n = struct.unpack(">H", b[i:i + 2])[0]
    return b[i + 2:i + 2 + n], i + 2 + n


def describe(data, kind, bstart, body, end, ctx):
    b = data[body:end]
    if kind == b"ftyp":
        brands = [b[i:i + 4].decode() for i in range(8, len(b), 4)]
        return "major=%s minor=%d compatible=%s" % (b[:4].decode(), struct.unpack(">I", b[4:8])[0], ",".join(brands))
    if kind == b"mdhd":
        return "timescale=%d" % struct.unpack(">I", b[12:16])[0]
    if kind == b"hdlr":
        return "handler=%s" % b[8:12].decode()
    if kind == b"tkhd":
        return "track_ID=%d flags=%d" % (struct.unpack(">I", b[12:16])[0], b[3])
    if kind == b"frma":
        return "format=%s" % b[:4].decode()
    if kind == b"schm":
        return "scheme=%s version=0x%08x" % (b[4:8].decode(), struct.unpack(">I", b[8:12])[0])
    if kind == b"ohdr":
        meth, pad, plen, lc, lr, lt = struct.unpack(">BBQHHH", b[4:20])
        i = 20
        cid = b[i:i + lc]; i += lc
        ri = b[i:i + lr]; i += lr
        th = b[i:i + lt]
        texts = [t.decode() for t in th.split(b"\0") if t]
        return "method=%d padding=%d plaintext=%d cid=%s ri=%s text=%s" % (
            meth, pad, plen, cid.decode(), ri.decode(), "|".join(texts))
    if kind == b"obki":
        n = b[4]
        i = 5
        out = []
        for _ in range(n):
            flags, typ, ln = b[i], b[i + 1], b[i + 2]
            kid = b[i + 3:i + 3 + ln]
            i += 3 + ln
            extra = ""
            if flags & 0x80:
                url, i = lp16(b, i); extra += " issuer=" + url.decode()
            if flags & 0x40:
                stkm, i = lp16(b, i); extra += " stkm=" + stkm.hex()
            if flags & 0x20:
                extra += " tbk=%d" % struct.unpack(">I", b[i:i + 4])[0]; i += 4
            if flags & 0x10:
                url, i = lp16(b, i); extra += " tbk_issuer=" + url.decode()
            out.append("flags=0x%02x type=%d key_id=%s%s" % (flags, typ, kid.decode(), extra))
        return "; ".join(out)
    if kind == b"odaf":
        return "selective=%d kil=%d ivl=%d" % (b[4] >> 7, b[5], b[6])
    if kind == b"oslt":
        return "bits=%d salt=%s" % (b[4], b[5:].hex())
    if kind == b"oksd":
        ver, typ, tbk = struct.unpack(">BBI", b[8:14])
        uri, _ = lp16(b, 14)
        return "version=%d type=%d tbk=%d uri=%s" % (ver, typ, tbk, uri.decode())
    if kind == b"odhe":
        return "content_type=%s" % b[5:5 + b[4]].decode()
    if kind == b"odda":
        return "encrypted=%d" % struct.unpack(">Q", b[4:12])[0]
    if kind == b"odfs":
        return "method=%d signature=%s" % (b[4], b[5:].hex())
    if kind == b"tfhd":
        ctx["track"] = struct.unpack(">I", b[4:8])[0]
        return "track_ID=%d flags=0x%06x" % (ctx["track"], struct.unpack(">I", b[0:4])[0] & 0xffffff)
    if kind == b"tfdt":
        v = b[0]
        t = struct.unpack(">Q", b[4:12])[0] if v == 1 else struct.unpack(">I", b[4:8])[0]
        return "base=%d" % t
    if kind == b"trun":
        v = b[0]
        flags = struct.unpack(">I", b[0:4])[0] & 0xffffff
        count = struct.unpack(">I", b[4:8])[0]
        i = 8
        off = 0
        if flags & 1:
            off = struct.unpack(">i", b[i:i + 4])[0]; i += 4
        if flags & 4:
            i += 4
        pos = ctx["moof"] + off
        lines = ["count=%d" % count]
        for _ in range(count):
            dur = size = 0
            cto = 0
            if flags & 0x100:
                dur = struct.unpack(">I", b[i:i + 4])[0]; i += 4
            if flags & 0x200:
                size = struct.unpack(">I", b[i:i + 4])[0]; i += 4
            if flags & 0x400:
                i += 4
            if flags & 0x800:
                cto = struct.unpack(">i" if v == 1 else ">I", b[i:i + 4])[0]; i += 4
            lines.append("sample track=%d dur=%d size=%d cto=%d data=%s" % (
                ctx["track"], dur, size, cto, data[pos:pos + size].hex()))
            pos += size
        return "\n".join(lines)
    if kind == b"mfro":
        return "size=%d" % struct.unpack(">I", b[4:8])[0]
    if kind == b"tfra":
        return "track_ID=%d entries=%d" % (struct.unpack(">I", b[4:8])[0], struct.unpack(">I", b[12:16])[0])
    return ""


def ohdr_children_at(data, body):
    lc, lr, lt = struct.unpack(">HHH", data[body + 14:body + 20])
    return 20 + lc + lr + lt


def walk(data, start, end, depth, ctx):
    for kind, bstart, body, bend in boxes(data, start, end):
        if kind == b"moof":
            ctx["moof"] = bstart
        text = describe(data, kind, bstart, body, bend, ctx)
        pad = "  " * depth
        first, *rest = (text or "").split("\n")
        print("%s%s size=%d%s" % (pad, kind.decode("latin-1"), bend - bstart, (" " + first) if first else ""))
        for line in rest:
            print("%s  %s" % (pad, line))
        at = CONTAINERS.get(kind)
        if kind == b"ohdr":
            at = ohdr_children_at(data, body)
        if kind == b"odhe":
            at = 5 + data[body + 4]
        if at is not None:
            walk(data, body + at, bend, depth + 1, ctx)


def main():
    if sys.argv[1] == "-":
        data = bytes.fromhex(sys.stdin.read().strip())
    else:
        with open(sys.argv[1], "rb") as f:
            data = f.read()
    walk(data, 0, len(data), 0, {"moof": 0, "track": 0})


if __name__ == "__main__":
    main()
