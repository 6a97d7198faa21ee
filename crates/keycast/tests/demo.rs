//! `keycast demo`.

use assert_cmd::Command;
use predicates::prelude::*;

#[test]
fn demo_holds_every_expectation() {
    Command::cargo_bin("keycast")
        .unwrap()
        .arg("demo")
        .assert()
        .success()
        .stdout(predicate::str::contains("FAILED").not())
        .stdout(predicate::str::contains("[demo key] SMK = Ks_int_NAF (stays in the card) = 5ecf80629e0becb2def8d9b3cb80ae3f99ab18f9c50f49fd5da0e6cfb6d0ee5f"))
        .stdout(predicate::str::contains("[demo key] SRK = Ks_ext_NAF = 79d8098e4b9ef12c858a0da3471f6b2d29b4cbb549500dcb3c88154562de340d"))
        .stdout(predicate::str::contains("B-TID = I1U8vpY3qJ0hiuZNrke/NQ==@bsf.example.org"))
        .stdout(predicate::str::contains("AUTN = 55f328b43577b9b94a9ffac354dfafb3"))
        .stdout(predicate::str::contains("ok      BSM verifies the card's verification message"))
        .stdout(predicate::str::contains("ok      card refuses STKM TEK ID 4 with one bit flipped"))
        .stdout(predicate::str::contains("with one bit flipped at byte 72: refused as expected — SW 9862"))
        .stdout(predicate::str::contains("ok      card refuses an AUTN* with one bit flipped: refused as expected — SW 9862"))
        .stdout(predicate::str::contains("[demo key] RES (GBA_U, LSB flipped) = a54211d5e3ba50be"))
        .stdout(predicate::str::contains("the BSF recovers SQN_MS = ff9bb4d0b607 from AUTS"))
        // The BSF is keycast-gba's over loopback: its 401 and 200, Zn, and the resynchronisation.
        .stdout(predicate::str::contains("ok      BSF's 401 carries test set 1's RAND and AUTN*"))
        .stdout(predicate::str::contains("ok      BSF answers the BSM on Zn: 200: IMPI 001010000000001@"))
        .stdout(predicate::str::contains("ok      BSF resynchronises SQN from the terminal's AUTS"))
        .stdout(predicate::str::contains("ok      BSF refuses Zn for the first B-TID: 404 unknown-btid"))
        .stdout(predicate::str::contains("(P-10): refused as expected — SW 6982"))
        .stdout(predicate::str::contains("Local Key Establishment"))
        .stdout(predicate::str::contains("ok      card refuses the same STKM bytes again (replay)"))
        .stdout(predicate::str::contains("outside the key window: refused as expected — SW 9865"))
        .stdout(predicate::str::contains("under SEK 00020001: refused as expected — SW 6A88"))
        .stdout(predicate::str::contains("under the revoked SEK: refused as expected — SW 6985"))
        .stdout(predicate::str::contains("ok      card recognises the solicited-pull trigger"))
        // (f) GBA_ME: test set 2 through the card's 3G context, then the same TEK on both terminals.
        .stdout(predicate::str::contains("RES 8011c48c0c214ed2 = XRES"))
        .stdout(predicate::str::contains("ok      GBA_ME store and BSM derive the same SRK = MRK(Ks_NAF)"))
        .stdout(predicate::str::contains("ok      GBA_ME terminal: the store opens the same STKM: the same TEK ‖ salt on both terminals"))
        // (h) The real BSM: admin API, two terminal shells, pushes, rollover, unsubscribe.
        .stdout(predicate::str::contains("ok      operator: catalogue through the admin API"))
        .stdout(predicate::str::contains("ok      operator: rollover of the empty Key Group 3 makes its first SEK (admin API): 201: SEK 00030001"))
        .stdout(predicate::str::contains("ok      terminal A subscribes (ServiceRequest basic / basic-month"))
        .stdout(predicate::str::contains("ok      terminal B registers on the 3GPP MBMS interface"))
        .stdout(predicate::str::contains("ok      BSM takes the verification message on its push socket: matched by (B-TID, TS)"))
        .stdout(predicate::str::contains("ok      terminal B's card opens STKM TEK ID 1 under SEK 00030001"))
        .stdout(predicate::str::contains("ok      operator: rollover of Key Group 3 makes the next SEK (admin API): 201: SEK 00030002"))
        .stdout(predicate::str::contains("the card stores SEK 00030001 and 00030002"))
        .stdout(predicate::str::contains("ok      push worker sends B both keys over UDP"))
        .stdout(predicate::str::contains("ok      terminal B's card refuses it under SEK 00030002: refused as expected — SW 6A88"))
        .stdout(predicate::str::contains("ok      terminal B sends an LTKM Request for SEK 00030002"))
        .stdout(predicate::str::contains("ok      BSM closes B's pushed copy of that key"))
        .stdout(predicate::str::contains("SEK 00030002: the card applies the invalidation; the terminal sends the verification message back"))
        .stdout(predicate::str::contains("ok      terminal A's card refuses STKM TEK ID 2 under SEK 00030002: refused as expected — SW 6985"))
        .stdout(predicate::str::contains("ok      terminal B's card opens the same STKM: B is still subscribed"))
        .stdout(predicate::str::contains("ok      BSM refuses terminal A's LTKM Request for SEK 00030002: NoSubscription"))
        // (i) Layer 4: the broadcaster core, terminal B's watcher and card, SRTP over UDP.
        .stdout(predicate::str::contains("ok      broadcaster: GET /internal/v1/key-groups/4/live (broadcaster token, from loopback): 200: SEK 00040001"))
        .stdout(predicate::str::contains("ok      terminal B opens 200 SRTP packets of sport, each byte-identical to the RTP that went in: 200 of 200"))
        .stdout(predicate::str::contains("ok      TEK switch mid-stream with the next TEK announced ahead: MKI 00040001‖0001"))
        .stdout(predicate::str::contains("no packet lost"))
        .stdout(predicate::str::contains("ok      terminal B drops a packet with MKI 00040001‖0002 protected under another TEK"))
        .stdout(predicate::str::contains("ok      terminal B drops the genuine packet with one payload bit flipped"))
        .stdout(predicate::str::contains("ok      zap to music: the card opens its STKM, the stream decrypts"))
        .stdout(predicate::str::contains("ok      zap back to sport: no packet lost, the TEKs reused"))
        .stdout(predicate::str::contains("answered the same TEK (resend rule)"))
        .stdout(predicate::str::contains("ok      one ESP packet under the current TEK"))
        .stdout(predicate::str::contains("ok      after the invalidation the card refuses sport's STKM and the stream stops decrypting"))
        .stdout(predicate::str::contains("with SW 6985 (key invalidated)"))
        .stdout(predicate::function(|s: &str| {
            // Section (i) is there, after (h), and every one of its expectations held.
            let Some((_, rest)) = s.split_once("\n(i) Layer 4:") else { return false };
            let section = rest.split("\nsummary: ").next().unwrap_or_default();
            let checks: Vec<&str> =
                section.lines().filter(|l| l.starts_with("  ok ") || l.starts_with("  FAILED ")).collect();
            s.contains("\n(h) ") && checks.len() >= 12 && checks.iter().all(|l| l.starts_with("  ok "))
        }))
        .stdout(predicate::function(|s: &str| {
            // "summary: N of N expectations held" with both numbers equal.
            s.lines().filter_map(|l| l.strip_prefix("summary: ")).any(|l| {
                let w: Vec<&str> = l.split(' ').collect();
                w.len() == 5 && w[0] == w[2] && w[3] == "expectations"
            })
        }))
        // (j) Pay-per-view and tokens on one service.
        .stdout(predicate::str::contains("ok      terminal A buys the pay-per-view (ServiceRequest events / final-ppv)"))
        .stdout(predicate::str::contains("ok      terminal A's card opens the program's STKM (program ID 1001)"))
        .stdout(predicate::str::contains("ok      terminal A's card refuses an STKM under the same PEK for program ID 1002: refused as expected — SW 6985"))
        .stdout(predicate::str::contains("ok      terminal A buys 2 view tokens (TokenPurchaseRequest for SEK 00060001)"))
        .stdout(predicate::str::contains("program ID 2001: TEK ‖ salt match the broadcaster's; the same program: no unit taken"))
        .stdout(predicate::str::contains("ok      terminal A's card refuses the token key: STKM TEK ID 4 for program ID 2003: refused as expected — SW 6985"))
        // (k) Record and play back within the play-back counter, then refused.
        .stdout(predicate::str::contains("ok      terminal A's card holds SEK 00080001 with 2 play-backs: the BSM made the offer's play-backs the key's P-4 policy: pay-per-time with play-back (0x01)"))
        .stdout(predicate::str::contains("ok      terminal A records the stream (keycast-terminal's watcher and Recorder, adapted PDCF): 2 STKMs and 10 samples"))
        .stdout(predicate::str::contains("ok      play-back 1 of 2 through the card: 10 samples equal the RTP payloads sent; the card counts 1 play-back(s) left"))
        .stdout(predicate::str::contains("ok      play-back 2 of 2 through the card: 10 samples equal the RTP payloads sent; the card counts 0 play-back(s) left"))
        .stdout(predicate::str::contains("ok      play-back 3: the card refuses the recording's first STKM: refused as expected — SW 9865"))
        // (l) A reboot: B restarts from its card and state, registers, gets the key it missed.
        .stdout(predicate::str::contains("ok      terminal B powers off: it writes its state, the card leaves the shell: state file of"))
        .stdout(predicate::str::contains("ok      operator: while B is off, rollover of Key Group 3 makes the next SEK (admin API): 201: SEK 00030003"))
        .stdout(predicate::str::contains("ok      terminal B powers on: a new keycast-terminal shell around the same card, restored from the state: the state reads back equal"))
        .stdout(predicate::str::contains("ok      terminal B registers on the MBMS interface after the restart: 200; no new bootstrap"))
        .stdout(predicate::str::contains("SEK 00030003: the card stores it; the terminal sends the verification message back"))
        .stdout(predicate::str::contains("ok      terminal B's card opens STKM TEK ID 1 under SEK 00030003: the key rolled over while B was off"))
        // (m) An ended purchase is purged at Deregistration.
        .stdout(predicate::str::contains("ok      admin API lists B's purchases: 2 purchase(s): basic / basic-month, events / short-ppv"))
        .stdout(predicate::str::contains("ok      terminal B deregisters (DeregistrationRequest): success for basic"))
        .stdout(predicate::str::contains("ok      the BSM purged the ended purchase: the admin API no longer lists it: 1 purchase(s): basic / basic-month"))
        // (n) BCAST_Client_ID over mutual TLS.
        .stdout(predicate::str::contains("ok      device B without a BCAST_Client_ID: the BSM asks for it at Registration: 403 send_BCAST_Client_ID"))
        .stdout(predicate::str::contains("ok      device B with a BCAST_Client_ID registers (OMA BCAST RegistrationRequest over mutual TLS): 403 send_BCAST_Client_ID, then the Registration again with the ID"))
        .stdout(predicate::str::contains("ok      the BSM stores the device's BCAST_Client_ID"))
        .stdout(predicate::function(|s: &str| {
            // The summary table: a row per section, each "ok" with held = total, adding up to
            // the summary line's count.
            let Some((_, rest)) = s.split_once("\nsummary by section:\n") else { return false };
            let table = rest.split("\n\n").next().unwrap_or_default();
            let rows: Vec<Vec<&str>> =
                table.lines().skip(1).map(|l| l.split_whitespace().rev().take(3).collect()).collect();
            let labels =
                [
                    "(a) ", "(b) ", "(c) ", "(d) ", "(e) ", "(f) ", "(g) ", "(h) ", "(i) ", "(j) ", "(k) ", "(l) ", "(m) ",
                    "(n) ",
                ];
            let held: usize = rows.iter().filter_map(|r| r.get(2)?.parse::<usize>().ok()).sum();
            labels.iter().all(|l| table.contains(&format!("\n  {l}")))
                && rows.len() == labels.len() + 1
                && rows.iter().all(|r| r.len() == 3 && r[0] == "ok" && r[1] == r[2])
                && s.contains(&format!("\nsummary: {held} of {held} expectations held\n"))
        }))
        .stdout(predicate::str::ends_with("demo: ok\n"));
}

#[test]
fn demo_is_reproducible_and_seedable() {
    let run = |args: &[&str]| {
        let out = Command::cargo_bin("keycast").unwrap().args(args).output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(run(&["demo"]), run(&["demo", "--seed", "1"]));
    let other = run(&["demo", "--seed", "42"]);
    assert_ne!(run(&["demo"]), other);
    assert!(other.contains("demo: ok"));
}

#[test]
fn demo_wire_output_feeds_inspect() {
    let out = Command::cargo_bin("keycast").unwrap().args(["demo", "--wire"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    // Every card operation is an APDU exchange: SELECT of the USIM, then AUTHENTICATE.
    assert!(text.contains("apdu > 00a4040c07a0000000871002"));
    assert!(text.contains("apdu < 9000"));
    // And every Ub message, without the port or the store's temporary path.
    assert!(text.contains("http < 401 WWW-Authenticate: Digest realm=\"bsf.example.org\""));
    assert!(text.contains("http < 200 Authentication-Info: "));
    assert!(!text.contains("keycast-demo-"));
    // The BSM section's LTKMs from the answers are shown too.
    assert!(text.contains("LTKM in the RegistrationResponse: 208 bytes on the wire"));
    assert!(text.split("127.0.0.1:").skip(1).all(|rest| rest.starts_with("<port>")));
    let mut lines = text.lines();
    lines.find(|l| l.trim_start().starts_with("LTKM:") && l.contains("bytes on the wire")).unwrap();
    let ltkm = lines.next().unwrap().trim_start().strip_prefix("hex: ").unwrap().to_owned();
    Command::cargo_bin("keycast")
        .unwrap()
        .args(["inspect", &ltkm, "--smk", "5ecf80629e0becb2def8d9b3cb80ae3f99ab18f9c50f49fd5da0e6cfb6d0ee5f"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Action: key delivery"));
}
