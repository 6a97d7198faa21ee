//! GStreamer and UDP helpers of the stream tests: pipelines run with `gst-launch-1.0 -e`, waiting
//! for a UDP port to be bound, and a clean stop that flushes filesinks.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Served;

/// 20 buffers of 1 024 samples at the pace of a live source: 2.6 s of 8 kHz tone.
pub const LIVE_TONE: &str = "audiotestsrc is-live=true num-buffers=20 ! audio/x-raw,format=S16BE,rate=8000,channels=1";

/// Whether `tool ARGS` runs and succeeds; prints that the test is skipped when not.
pub fn have(tool: &str, args: &[&str]) -> bool {
    let ok =
        Command::new(tool).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: {tool} {} not available", args.join(" "));
    }
    ok
}

/// `gst-launch-1.0 -q -e PIPELINE` (EOS on SIGINT, so filesinks flush).
pub fn gst(pipeline: &str) -> Command {
    let mut cmd = Command::new("gst-launch-1.0");
    cmd.arg("-q").arg("-e").args(pipeline.split_whitespace()).stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until some process listens on UDP `port` (Linux `/proc/net/udp`).
pub fn wait_bound(port: u16) {
    let needle = format!(":{port:04X} ");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::fs::read_to_string("/proc/net/udp").is_ok_and(|t| t.contains(&needle)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing bound UDP port {port} within 20 s");
}

/// Ends a `gst-launch-1.0 -e` pipeline with SIGINT, so it sends EOS and its filesink flushes. A
/// pipeline that never received anything may not finish its EOS (sdpdemux without pads): after
/// 10 s it is killed, and whatever its filesink holds is what the test sees.
pub fn interrupt(mut child: Child) {
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (at most 20 s) until `served`'s log contains `needle`.
pub fn wait_log(served: &Served, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !served.log_text().contains(needle) {
        assert!(Instant::now() < deadline, "no {needle:?} within 20 s:\n{}", served.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
}
