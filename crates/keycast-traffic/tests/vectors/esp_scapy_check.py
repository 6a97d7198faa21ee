#!/usr/bin/env python3
"""Cross-check of keycast_traffic::esp with python3-scapy's ESP (scapy.layers.ipsec).

Reads lines from stdin and answers one line each:
  open TEK SPI ESP_PACKET        -> "NEXT_HEADER PAYLOAD" (scapy decrypts and checks the ICV), or "error ..."
  seal TEK SPI SEQ IV PAYLOAD    -> ESP_PACKET (scapy encrypts a UDP datagram, next header 17)
All values hex except SPI and SEQ (decimal). The HMAC key comes from gen_esp_vectors.auth_key
(the [chosen] RFC 3830 PRF derivation), so scapy checks the wire format and the ICV, not the
derivation. An empty hex value is written "-".
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_esp_vectors import auth_key  # noqa: E402

from scapy.layers.inet import IP, UDP  # noqa: E402
from scapy.layers.ipsec import ESP, SecurityAssociation  # noqa: E402
from scapy.packet import Raw  # noqa: E402


def h(s: str) -> bytes:
    return b"" if s == "-" else bytes.fromhex(s)


def sa(tek: bytes, spi: int) -> SecurityAssociation:
    return SecurityAssociation(ESP, spi=spi, crypt_algo="AES-CBC", crypt_key=tek,
                               auth_algo="HMAC-SHA1-96", auth_key=auth_key(tek, spi))


def main() -> None:
    for line in sys.stdin:
        f = line.split()
        if not f:
            continue
        try:
            if f[0] == "open":
                tek, spi, esp = h(f[1]), int(f[2]), h(f[3])
                pkt = IP(bytes(IP(src="127.0.0.1", dst="127.0.0.1", proto=50) / Raw(esp)))
                dec = sa(tek, spi).decrypt(pkt)
                print(f"{dec[IP].proto} {bytes(dec[IP].payload).hex() or '-'}")
            elif f[0] == "seal":
                tek, spi, seq, iv, payload = h(f[1]), int(f[2]), int(f[3]), h(f[4]), h(f[5])
                inner = IP(src="127.0.0.1", dst="127.0.0.1") / UDP(bytes(payload))
                enc = sa(tek, spi).encrypt(inner, seq_num=seq, iv=iv)
                print(bytes(enc[IP].payload).hex())
            else:
                print("error unknown verb")
        except Exception as e:  # reported to the Rust side, which fails the test
            print(f"error {type(e).__name__}: {e}".replace("\n", " "))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
