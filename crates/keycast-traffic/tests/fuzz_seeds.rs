//! The committed seeds of the `srtp_unprotect` fuzz target (fuzz/corpus/srtp_unprotect, made
//! with the Python oracle under the keys of `fuzzing::keys`) get past the tag check, so the
//! fuzzer starts from packets that reach decryption. Run with `--features fuzzing`.
#![cfg(feature = "fuzzing")]

use keycast_traffic::fuzzing;
use keycast_traffic::srtp::SrtpReceiver;

#[test]
fn seeds_unprotect_under_the_fuzzing_keys() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/srtp_unprotect");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let (&selector, mut rest) = data.split_first().unwrap();
        let mut rx = SrtpReceiver::new(fuzzing::policy(selector));
        let mut rtcp = SrtpReceiver::new(fuzzing::policy(selector));
        for k in &fuzzing::keys() {
            rx.add_key(k);
            rtcp.add_key(k);
        }
        while let Some((&len, tail)) = rest.split_first() {
            let (pkt, tail) = tail.split_at(usize::from(len));
            rest = tail;
            let ok = rx.unprotect(&mut pkt.to_vec()).is_ok() || rtcp.unprotect_rtcp(&mut pkt.to_vec()).is_ok();
            assert!(ok, "seed packet refused: {}", hex::encode(pkt));
            seen += 1;
        }
        fuzzing::srtp_unprotect(&data);
    }
    assert!(seen >= 30);
}
