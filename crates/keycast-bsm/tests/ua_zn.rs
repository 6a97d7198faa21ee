//! End to end over loopback: the real BSF (keycast-gba), a terminal bootstrapping with the
//! emulated card, and a BSM route behind `require_ua_digest` that gets the terminal's keys over
//! the BSF's Zn HTTP API (profile P-7).

mod ua_support;

use keycast_bsm::keys::GbaType as BsmGbaType;
use keycast_gba::bsf::GbaType;
use keycast_gba::client::GbaMode;
use keycast_provisioning::digest::Challenge;
use ua_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gba_u_terminal_registers_with_keys_fetched_over_zn() {
    with_limit(async {
        let clock = TestClock::new();
        let bsf = RunningBsf::start(&clock, GbaType::GbaU, 86_400).await;
        let bsm = RunningBsm::start(&bsf, &clock).await;
        let mut terminal = Terminal::new(GbaMode::GbaU);
        assert_eq!(terminal.bootstrap(&bsf, &clock).await.b_tid, BTID1);
        let creds = terminal.credentials();
        let body = registration(BTID1);

        let exchange = ua_post(&bsm, &creds, &body).await;
        assert_eq!(exchange.challenge.realm, "3GPP-bootstrapping@bmsc.example.org");
        assert_eq!(exchange.response.status, 200, "{:?}", exchange.response);
        let text = String::from_utf8(exchange.response.body.clone()).unwrap();
        assert_eq!(text, format!("registered {BTID1} ({IMPI}, gba-u)"));
        {
            let seen = bsm.seen.lock().unwrap();
            let (keys, body_protected, seen_body) = &seen[0];
            assert!(*body_protected, "the terminal prefers auth-int");
            assert_eq!(seen_body, &body);
            assert_eq!(keys.gba_type(), BsmGbaType::GbaU);
            // P-7, GBA_U with an MBMS card: SMK = Ks_int_NAF, SRK = Ks_ext_NAF (vectors.md §2).
            assert_eq!(hex::encode(keys.smk().expose_secret()), KS_INT_NAF);
            assert_eq!(hex::encode(keys.srk().expose_secret()), KS_EXT_NAF);
            assert_eq!(keys.srk(), &creds.srk);
            assert_eq!(keys.lifetime(), T0 + 86_400);
        }

        // The same Authorization again: a replay.
        let replay = ua_post_raw(&bsm, &body, &exchange.authorization).await;
        assert_eq!(replay.status, 401);
        // A second registration is served from the key cache: Zn was asked once.
        assert_eq!(ua_post(&bsm, &creds, &body).await.response.status, 200);
        assert_eq!(bsm.zn_calls(), 1);
        assert_eq!(bsm.seen.lock().unwrap().len(), 2);
        bsm.stop().await;
        bsf.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gba_me_terminal_registers_with_srk_from_mrk() {
    with_limit(async {
        let clock = TestClock::new();
        let bsf = RunningBsf::start(&clock, GbaType::GbaMe, 86_400).await;
        let bsm = RunningBsm::start(&bsf, &clock).await;
        let mut terminal = Terminal::new(GbaMode::GbaMe);
        let btid = terminal.bootstrap(&bsf, &clock).await.b_tid;
        let creds = terminal.credentials();
        let exchange = ua_post(&bsm, &creds, &registration(&btid)).await;
        assert_eq!(exchange.response.status, 200, "{:?}", exchange.response);
        let keys = bsm.seen.lock().unwrap()[0].0.clone();
        assert_eq!((keys.btid(), keys.impi(), keys.gba_type()), (btid.as_str(), IMPI, BsmGbaType::GbaMe));
        // P-7, GBA_ME: SRK = MRK(Ks_NAF), the same on both sides; SMK = Ks_NAF is not the SRK.
        assert_eq!(keys.srk(), &creds.srk);
        assert_ne!(keys.smk().expose_secret(), keys.srk().expose_secret());
        bsm.stop().await;
        bsf.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_btid_replaced_by_a_new_bootstrap_gets_401_and_the_new_one_works() {
    with_limit(async {
        let clock = TestClock::new();
        let bsf = RunningBsf::start(&clock, GbaType::GbaU, 86_400).await;
        let bsm = RunningBsm::start(&bsf, &clock).await;
        let mut terminal = Terminal::new(GbaMode::GbaU);
        terminal.bootstrap(&bsf, &clock).await;
        let old = terminal.credentials();
        clock.advance(10);
        let new_btid = terminal.bootstrap(&bsf, &clock).await.b_tid;
        assert_ne!(new_btid, old.b_tid);
        let new = terminal.credentials();

        // The BSF no longer knows the old B-TID: 401 with a fresh challenge, so the terminal
        // bootstraps again.
        let refused = ua_post(&bsm, &old, &registration(&old.b_tid)).await;
        assert_eq!(refused.response.status, 401, "{:?}", refused.response);
        let again = Challenge::parse(refused.response.header("WWW-Authenticate").unwrap()).unwrap();
        assert!(!again.stale);
        assert!(bsm.seen.lock().unwrap().is_empty());

        let accepted = ua_post(&bsm, &new, &registration(&new_btid)).await;
        assert_eq!(accepted.response.status, 200, "{:?}", accepted.response);
        assert_eq!(bsm.seen.lock().unwrap()[0].0.btid(), new_btid);
        bsm.stop().await;
        bsf.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_end_with_the_bootstrap_lifetime() {
    with_limit(async {
        let clock = TestClock::new();
        let bsf = RunningBsf::start(&clock, GbaType::GbaU, 3600).await;
        let bsm = RunningBsm::start(&bsf, &clock).await;
        let mut terminal = Terminal::new(GbaMode::GbaU);
        terminal.bootstrap(&bsf, &clock).await;
        let creds = terminal.credentials();
        assert_eq!(ua_post(&bsm, &creds, &registration(BTID1)).await.response.status, 200);

        clock.advance(3599);
        assert_eq!(ua_post(&bsm, &creds, &registration(BTID1)).await.response.status, 200);
        clock.advance(1);
        // The cached record has run out: refused without asking the BSF.
        let refused = ua_post(&bsm, &creds, &registration(BTID1)).await;
        assert_eq!(refused.response.status, 401);
        assert_eq!(bsm.zn_calls(), 1);
        bsm.stop().await;
        bsf.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bsm_with_an_expired_session_it_never_cached_gets_410_from_zn_and_answers_401() {
    with_limit(async {
        let clock = TestClock::new();
        let bsf = RunningBsf::start(&clock, GbaType::GbaU, 3600).await;
        let mut terminal = Terminal::new(GbaMode::GbaU);
        terminal.bootstrap(&bsf, &clock).await;
        let creds = terminal.credentials();
        clock.advance(3600);
        let bsm = RunningBsm::start(&bsf, &clock).await;
        assert_eq!(ua_post(&bsm, &creds, &registration(BTID1)).await.response.status, 401);
        assert_eq!(bsm.zn_calls(), 1);
        bsm.stop().await;
        bsf.stop().await;
    })
    .await;
}
