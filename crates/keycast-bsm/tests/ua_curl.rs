//! A standard Digest client talks to the BSM: curl registers a terminal bootstrapped against the
//! real BSF, with username = B-TID and password = base64(SRK) (profile P-7). Skipped, with a
//! note, when curl is not installed.

mod ua_support;

use std::process::Command;

use keycast_gba::bsf::GbaType;
use keycast_gba::client::{GbaMode, ua_digest_password};
use ua_support::*;

fn curl_available() -> bool {
    Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_digest_registration() {
    if !curl_available() {
        println!("skipped: curl not found");
        return;
    }
    with_limit(async {
        let clock = TestClock::new();
        let bsf = RunningBsf::start(&clock, GbaType::GbaU, 86_400).await;
        let bsm = RunningBsm::start(&bsf, &clock).await;
        let mut terminal = Terminal::new(GbaMode::GbaU);
        let btid = terminal.bootstrap(&bsf, &clock).await.b_tid;
        let creds = terminal.credentials();
        let password = String::from_utf8(ua_digest_password(&creds.srk).expose_secret().to_vec()).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let body_file = dir.path().join("register.xml");
        let body = registration(&btid);
        std::fs::write(&body_file, &body).unwrap();
        let url = format!("http://{}{PATH}", bsm.addr);
        let args = vec![
            "--silent".to_owned(),
            "--show-error".to_owned(),
            "--noproxy".to_owned(),
            "*".to_owned(),
            "--max-time".to_owned(),
            "20".to_owned(),
            "--digest".to_owned(),
            "-u".to_owned(),
            format!("{btid}:{password}"),
            "-A".to_owned(),
            "3gpp-gba".to_owned(),
            "--data-binary".to_owned(),
            format!("@{}", body_file.display()),
            "-H".to_owned(),
            "Content-Type: application/vnd.oma.bcast.sprov+xml".to_owned(),
            "-w".to_owned(),
            "\n%{http_code}".to_owned(),
            url,
        ];
        let output =
            tokio::task::spawn_blocking(move || Command::new("curl").args(&args).output()).await.unwrap().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "curl failed: {stderr}");
        let (answer, status) = stdout.rsplit_once('\n').expect("body and status");
        assert_eq!(status, "200", "{stdout} {stderr}");
        assert_eq!(answer, format!("registered {btid} ({IMPI}, gba-u)"));

        {
            let seen = bsm.seen.lock().unwrap();
            assert_eq!(seen.len(), 1);
            let (keys, body_protected, seen_body) = &seen[0];
            assert_eq!(keys.btid(), btid);
            assert_eq!(seen_body, &body);
            // curl answers `qop="auth,auth-int"` with auth.
            assert!(!body_protected);
        }

        // The same curl without the 3gpp-gba token is not a GBA client.
        let url = format!("http://{}{PATH}", bsm.addr);
        let refused = tokio::task::spawn_blocking(move || {
            Command::new("curl")
                .args(["--silent", "--noproxy", "*", "--max-time", "20", "--digest", "-u", "x:y"])
                .args(["-A", "curl", "-o", "/dev/null", "-w", "%{http_code}", "--data-binary", "x", &url])
                .output()
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(String::from_utf8_lossy(&refused.stdout), "403");
        bsm.stop().await;
        bsf.stop().await;
    })
    .await;
}
