//! The SDP pieces: `m=`, `c=`, `a=rtpmap`, `a=key-mgmt:mikey`, read, written and read again.

mod common;

use common::data;
use keycast_guide::GuideError;
use keycast_guide::sdp::{Connection, RtpMap, Sdp, SdpMedia};

#[test]
fn reads_the_example_session() {
    let sdp = Sdp::parse(&data("news24.sdp")).unwrap();
    assert_eq!(sdp.session_name, "News 24");
    assert_eq!(sdp.origin.as_deref(), Some("- 2890844526 1 IN IP4 192.0.2.10"));
    assert_eq!(sdp.connection, Some(Connection::ip4_multicast("224.1.2.3", 127)));
    assert_eq!(sdp.timing.as_deref(), Some("0 0"));
    assert_eq!(sdp.mikey.as_deref(), Some(&[0x02, 0x01, 0x04, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05][..]));
    assert_eq!(sdp.other, [('i', "Evening news stream".to_owned())]);
    assert_eq!(sdp.media.len(), 3);

    let video = &sdp.media[0];
    assert_eq!((video.media.as_str(), video.port, video.proto.as_str()), ("video", 4002, "RTP/SAVP"));
    assert_eq!(video.payload_types().collect::<Vec<_>>(), [96]);
    assert_eq!(
        video.rtpmaps,
        [RtpMap { payload_type: 96, encoding: "H264".into(), clock_rate: 90_000, parameters: None }]
    );
    assert_eq!(video.attributes, ["fmtp:96 profile-level-id=42e00c"]);
    assert_eq!(video.other, [('b', "AS:384".to_owned())]);
    assert_eq!(sdp.flow_id(video).as_deref(), Some("224.1.2.3/4002"));
    assert_eq!(sdp.mikey_of(video), sdp.mikey.as_deref());

    let audio = &sdp.media[1];
    assert_eq!(audio.rtpmaps[0].parameters.as_deref(), Some("2"));
    assert_eq!(audio.rtpmaps[0].clock_rate, 48_000);

    // The MIKEY stream has its own connection.
    let mikey = &sdp.media[2];
    assert_eq!((mikey.port, mikey.proto.as_str(), mikey.formats.as_slice()), (2269, "UDP", &["mikey".to_owned()][..]));
    assert_eq!(sdp.flow_id(mikey).as_deref(), Some("224.1.2.4/2269"));
}

#[test]
fn example_round_trips_byte_for_byte() {
    let text = data("news24.sdp");
    let sdp = Sdp::parse(&text).unwrap();
    assert_eq!(sdp.to_sdp(), text);
    assert_eq!(Sdp::parse(&sdp.to_string()).unwrap(), sdp);
}

#[test]
fn lf_only_and_inline_access_sdp_are_read() {
    let access = keycast_guide::fragments::Access::from_xml(&data("access_sdp.xml")).unwrap();
    let inline = access.session_description().unwrap().sdp.clone().unwrap();
    let sdp = Sdp::parse(&inline).unwrap();
    assert_eq!(sdp.media.len(), 3);
    assert_eq!(sdp.flow_id(&sdp.media[1]).as_deref(), Some("224.1.2.3/4004"));
}

#[test]
fn builds_a_protected_session() {
    let mut sdp = Sdp::new_session("News 24", "192.0.2.10", 42, Connection::ip4_multicast("224.1.2.3", 16));
    let mut video = SdpMedia::rtp("video", 4002, "RTP/SAVP", 96, "H264", 90_000);
    video.mikey = Some(vec![1, 2, 3, 4]);
    sdp.media.push(video);
    let text = sdp.to_sdp();
    assert_eq!(
        text,
        "v=0\r\no=- 42 1 IN IP4 192.0.2.10\r\ns=News 24\r\nc=IN IP4 224.1.2.3/16\r\nt=0 0\r\n\
         m=video 4002 RTP/SAVP 96\r\na=rtpmap:96 H264/90000\r\na=key-mgmt:mikey AQIDBA==\r\n"
    );
    assert_eq!(Sdp::parse(&text).unwrap(), sdp);
}

#[test]
fn ipv6_connection_with_count() {
    let sdp = Sdp::parse("v=0\ns=x\nc=IN IP6 ff15::101/3\nm=audio 5000 RTP/AVP 0\n").unwrap();
    let c = sdp.connection.as_ref().unwrap();
    assert_eq!((c.address.as_str(), c.ttl, c.count), ("ff15::101", None, Some(3)));
    assert_eq!(Sdp::parse(&sdp.to_sdp()).unwrap(), sdp);
}

fn sdp_err(text: &str) -> (usize, &'static str) {
    match Sdp::parse(text) {
        Err(GuideError::Sdp { line, reason }) => (line, reason),
        other => panic!("expected an SDP error, got {other:?}"),
    }
}

#[test]
fn rejects_missing_version() {
    assert_eq!(sdp_err("s=x\n").0, 1);
}

#[test]
fn rejects_empty_text() {
    assert_eq!(sdp_err(""), (0, "empty SDP"));
}

#[test]
fn rejects_missing_session_name() {
    assert_eq!(sdp_err("v=0\nt=0 0\n"), (0, "s= is missing"));
}

#[test]
fn rejects_bad_port() {
    assert_eq!(sdp_err("v=0\ns=x\nm=video 70000 RTP/AVP 96\n").0, 3);
}

#[test]
fn rejects_m_line_without_format() {
    assert_eq!(sdp_err("v=0\ns=x\nm=video 4000 RTP/AVP\n").0, 3);
}

#[test]
fn rejects_rtpmap_payload_type_over_127() {
    assert_eq!(
        sdp_err("v=0\ns=x\nm=video 4000 RTP/AVP 96\na=rtpmap:200 H264/90000\n").1,
        "rtpmap payload type above 127"
    );
}

#[test]
fn rejects_rtpmap_without_clock_rate() {
    assert_eq!(sdp_err("v=0\ns=x\nm=video 4000 RTP/AVP 96\na=rtpmap:96 H264\n").1, "rtpmap needs a clock rate");
}

#[test]
fn rejects_mikey_not_base64() {
    assert_eq!(sdp_err("v=0\ns=x\na=key-mgmt:mikey ***\n").1, "key-mgmt:mikey data is not base64");
}

#[test]
fn rejects_other_network_type() {
    assert_eq!(sdp_err("v=0\ns=x\nc=ATM NSAP 47.0005\n").1, "c= network type is not IN");
}

#[test]
fn rejects_ttl_over_255() {
    assert_eq!(sdp_err("v=0\ns=x\nc=IN IP4 224.1.2.3/300\n").1, "c= TTL above 255");
}

#[test]
fn rejects_line_without_equals() {
    assert_eq!(sdp_err("v=0\nhello\n").0, 2);
}

#[test]
fn rejects_repeated_connection_in_media() {
    assert_eq!(sdp_err("v=0\ns=x\nm=audio 1 RTP/AVP 0\nc=IN IP4 1.2.3.4\nc=IN IP4 1.2.3.5\n").0, 5);
}

#[test]
fn rejects_oversized_sdp() {
    let big = format!("v=0\ns=x\n{}", "a=x\n".repeat(20_000));
    assert_eq!(sdp_err(&big), (0, "SDP larger than 64 KiB"));
}

#[test]
fn other_key_management_protocols_are_kept_raw() {
    let sdp = Sdp::parse("v=0\ns=x\na=key-mgmt:other abc\n").unwrap();
    assert_eq!(sdp.mikey, None);
    assert_eq!(sdp.attributes, ["key-mgmt:other abc"]);
}
