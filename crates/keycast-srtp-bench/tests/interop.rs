//! Interop with Debian's libsrtp2: byte-identical SRTP packets with a 6-byte MKI, and each side
//! unprotects the other's. Prints that it was skipped when libsrtp2 was not found at build time.

#[cfg(have_libsrtp2)]
#[test]
fn libsrtp_and_keycast_agree() {
    for len in [12, 13, 128, 1024, 1400] {
        // Includes a sequence-number wrap (ROC 0 → 1) on both sides.
        keycast_srtp_bench::cross_check(len, (0..8).chain([0x7fff, 0xfffe, 0xffff, 0, 1, 2])).unwrap();
    }
}

#[cfg(not(have_libsrtp2))]
#[test]
fn libsrtp_and_keycast_agree() {
    println!("skipped: libsrtp2 was not found at build time (apt-get install libsrtp2-dev)");
}

#[cfg(have_libsrtp2)]
#[test]
fn libsrtp_refuses_a_tampered_keycast_packet_and_vice_versa() {
    use keycast_srtp_bench::libsrtp::Session;
    use keycast_srtp_bench::{MASTER_KEY, MASTER_SALT, MKI, keycast_key, rtp_packet};
    use keycast_traffic::srtp::{SrtpPolicy, SrtpReceiver, SrtpSender};

    let mut tx = SrtpSender::new(SrtpPolicy::rfc3711(), &keycast_key());
    let mut p = rtp_packet(5, 200);
    tx.protect(&mut p).unwrap();
    p[20] ^= 1;
    let mut rx = Session::receiver(&MASTER_KEY, &MASTER_SALT, &MKI.to_bytes()).unwrap();
    assert_eq!(rx.unprotect(&mut p.clone()), Err(7), "libsrtp: auth_fail");

    let mut ltx = Session::sender(&MASTER_KEY, &MASTER_SALT, &MKI.to_bytes()).unwrap();
    let mut q = rtp_packet(5, 200);
    q.resize(200 + Session::TRAILER_ROOM, 0);
    let n = ltx.protect(&mut q, 200).unwrap();
    q.truncate(n);
    q[20] ^= 1;
    let mut krx = SrtpReceiver::new(SrtpPolicy::rfc3711());
    krx.add_key(&keycast_key());
    assert!(krx.unprotect(&mut q).is_err());
}
