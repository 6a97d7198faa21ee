//! BCAST_Client_ID at Registration (seed §6.9.2) against the real BSF and the BSM's provisioning
//! routes served by `http::tls::serve`, with a test CA made by rcgen: the BSM asks for the ID with
//! `403 send_BCAST_Client_ID`, stores an acceptable one and answers the Registration, refuses one
//! that arrives outside mutually authenticated HTTPS (storing nothing), refuses malformed ones
//! with 400, and (client certificates required) refuses the handshake of a client without an
//! acceptable certificate.

mod client_id_support;
mod service_support;
mod ua_support;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use client_id_support::{ClientCert, Pki, TlsBsm, ua_exchange};
use keycast_bsm::client_id::{BcastClientId, BcastClientIdPolicy, MAX_CLIENT_ID_BASE64_LEN};
use keycast_bsm::domain::TerminalId;
use keycast_bsm::http::client_id::{CHANNEL_REFUSED_BODY, SEND_CLIENT_ID_BODY, SERVER_NAME};
use keycast_bsm::http::tls::ClientCertificates;
use keycast_bsm::store::sql::SqliteStore;
use keycast_bsm::store::{BsmStore, Terminal};
use keycast_gba::bsf::GbaType;
use keycast_gba::client::http::{HttpClient, UbTransport as _};
use keycast_gba::client::{GbaMode, HttpRequest, HttpResponse, NafCredentials};
use keycast_provisioning::mbms::{self, RegisterRequest, RegisterResponse};
use keycast_provisioning::sprov::{
    self, PurchaseItemRef, PurchaseRequestItem, RegistrationRequest, RegistrationResponse, ServiceRequest, StatusCode,
};
use ua_support::{BSM, IMPI, RunningBsf, Terminal as GbaTerminal, TestClock, with_limit};

const SPROV: &str = "/sprov";
const REGISTER: &str = "/keymanagement?requesttype=register";
const PLAIN_UA: &str = "Keycast-test/0.1 3gpp-gba";
const ID: &[u8] = b"bcast-client-0001";

fn ua_with(id_text: &str) -> String {
    format!("{PLAIN_UA} BCAST_Client_ID={id_text}")
}

fn service_request() -> Vec<u8> {
    let item = PurchaseRequestItem { item: PurchaseItemRef::new("basic", Some("basic-month")), price: None };
    ServiceRequest { request_id: 1, client: None, items: vec![item] }.to_xml().unwrap().into_bytes()
}

fn registration() -> Vec<u8> {
    let item = PurchaseItemRef::new("basic", Some("basic-month"));
    RegistrationRequest { request_id: 2, client: None, items: vec![item] }.to_xml().unwrap().into_bytes()
}

fn mbms_register() -> Vec<u8> {
    RegisterRequest { service_ids: vec!["basicbasic-month".into()] }.to_xml().unwrap().into_bytes()
}

fn body(r: &HttpResponse) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

async fn stored(bsm: &TlsBsm) -> Option<Terminal> {
    let store: &SqliteStore = bsm.state.service().store();
    store.terminal(&TerminalId(IMPI.into())).await.unwrap()
}

async fn stored_id(bsm: &TlsBsm) -> Option<BcastClientId> {
    stored(bsm).await.and_then(|t| t.bcast_client_id)
}

/// The BSF, a BSM with `clients` and `policy`, and a bootstrapped terminal's Ua credentials.
async fn setup(
    clock: &TestClock,
    pki: &Pki,
    clients: ClientCertificates,
    policy: BcastClientIdPolicy,
) -> (RunningBsf, TlsBsm, NafCredentials) {
    let bsf = RunningBsf::start(clock, GbaType::GbaU, 86_400).await;
    let bsm = TlsBsm::start(&bsf, clock, pki.server_config(clients), policy).await;
    let mut terminal = GbaTerminal::new(GbaMode::GbaU);
    terminal.bootstrap(&bsf, clock).await;
    (bsf, bsm, terminal.credentials())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bsm_asks_for_the_id_over_mutual_tls_then_registers_and_stores_it() {
    with_limit(async {
        let clock = TestClock::new();
        let pki = Pki::new();
        let clients = ClientCertificates::Required(pki.ca.roots());
        let (bsf, bsm, creds) = setup(&clock, &pki, clients, BcastClientIdPolicy::Request).await;
        let mut https = pki.https_client(bsm.https, ClientCert::Trusted);
        let ct = sprov::CONTENT_TYPE;

        // Not a Registration: no ID asked for.
        let bought = ua_exchange(&mut https, &creds, SPROV, ct, &service_request(), PLAIN_UA).await.unwrap();
        assert_eq!(bought.status, 200, "{bought:?}");

        // (a) A Registration without the ID: 403 send_BCAST_Client_ID, as the seed writes it.
        let asked = ua_exchange(&mut https, &creds, SPROV, ct, &registration(), PLAIN_UA).await.unwrap();
        assert_eq!((asked.status, body(&asked).as_str()), (403, SEND_CLIENT_ID_BODY));
        assert_eq!(asked.header("Server"), Some(SERVER_NAME));
        assert!(asked.header("Date").is_some());
        assert_eq!(stored_id(&bsm).await, None);

        // (b) The same Registration with the ID: the Registration Response, and the ID stored.
        let ua = ua_with(&STANDARD.encode(ID));
        let answer = ua_exchange(&mut https, &creds, SPROV, ct, &registration(), &ua).await.unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
        let response = RegistrationResponse::from_xml(&answer.body).unwrap();
        assert_eq!((response.request_id, response.status), (2, StatusCode::Success));
        assert_eq!(response.items[0].status, StatusCode::Success);
        assert!(!response.ltkms.is_empty(), "the Registration proceeds as without the rule");
        assert_eq!(stored_id(&bsm).await, Some(BcastClientId::from_bytes(ID.to_vec()).unwrap()));

        // The MBMS interface's register is a Registration too; a later ID replaces the first.
        let mbms_ct = mbms::REGISTER_CONTENT_TYPE;
        let asked = ua_exchange(&mut https, &creds, REGISTER, mbms_ct, &mbms_register(), PLAIN_UA).await.unwrap();
        assert_eq!((asked.status, body(&asked).as_str()), (403, SEND_CLIENT_ID_BODY));
        let ua = ua_with(&STANDARD.encode(b"second"));
        let answer = ua_exchange(&mut https, &creds, REGISTER, mbms_ct, &mbms_register(), &ua).await.unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
        let codes: Vec<u16> =
            RegisterResponse::from_xml(&answer.body).unwrap().responses.iter().map(|r| r.response_code.code).collect();
        assert_eq!(codes, [200]);
        assert_eq!(stored_id(&bsm).await.unwrap().as_bytes(), b"second");

        bsm.stop().await;
        bsf.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_outside_mutual_tls_is_refused_and_not_stored() {
    with_limit(async {
        let clock = TestClock::new();
        let pki = Pki::new();
        let clients = ClientCertificates::Optional(pki.ca.roots());
        let (bsf, bsm, creds) = setup(&clock, &pki, clients, BcastClientIdPolicy::Request).await;
        let ct = sprov::CONTENT_TYPE;
        let ua = ua_with(&STANDARD.encode(ID));

        // (c) Plain HTTP: refused, Registration or not; nothing stored, nothing registered.
        let mut plain = HttpClient::plain(bsm.http.to_string());
        let refused = ua_exchange(&mut plain, &creds, SPROV, ct, &registration(), &ua).await.unwrap();
        assert_eq!((refused.status, body(&refused).as_str()), (403, CHANNEL_REFUSED_BODY));
        let refused = ua_exchange(&mut plain, &creds, SPROV, ct, &service_request(), &ua).await.unwrap();
        assert_eq!(refused.status, 403, "the rule holds for every request");
        assert_eq!(stored(&bsm).await, None, "a refused request leaves no terminal behind");
        // Without the ID, plain HTTP works for what is not a Registration, and a Registration is
        // asked for the ID (which the terminal may then send over HTTPS).
        let bought = ua_exchange(&mut plain, &creds, SPROV, ct, &service_request(), PLAIN_UA).await.unwrap();
        assert_eq!(bought.status, 200, "{bought:?}");
        let asked = ua_exchange(&mut plain, &creds, SPROV, ct, &registration(), PLAIN_UA).await.unwrap();
        assert_eq!(body(&asked), SEND_CLIENT_ID_BODY);

        // HTTPS without a client certificate (admitted here): still no ID.
        let mut tls_only = pki.https_client(bsm.https, ClientCert::None);
        let refused = ua_exchange(&mut tls_only, &creds, SPROV, ct, &registration(), &ua).await.unwrap();
        assert_eq!((refused.status, body(&refused).as_str()), (403, CHANNEL_REFUSED_BODY));
        let mbms_ct = mbms::REGISTER_CONTENT_TYPE;
        let refused = ua_exchange(&mut tls_only, &creds, REGISTER, mbms_ct, &mbms_register(), &ua).await.unwrap();
        assert_eq!(refused.status, 403);
        assert_eq!(stored_id(&bsm).await, None);

        // The same ID with a certificate from the test CA goes through.
        let mut mtls = pki.https_client(bsm.https, ClientCert::Trusted);
        let answer = ua_exchange(&mut mtls, &creds, SPROV, ct, &registration(), &ua).await.unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(stored_id(&bsm).await.unwrap().as_bytes(), ID);

        bsm.stop().await;
        bsf.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_acceptable_client_certificate_the_handshake_fails() {
    with_limit(async {
        let clock = TestClock::new();
        let pki = Pki::new();
        let bsf = RunningBsf::start(&clock, GbaType::GbaU, 86_400).await;
        let tls = pki.server_config(ClientCertificates::Required(pki.ca.roots()));
        let bsm = TlsBsm::start(&bsf, &clock, tls, BcastClientIdPolicy::Request).await;
        let request = HttpRequest {
            method: "POST".into(),
            uri: SPROV.into(),
            headers: vec![
                ("Host".into(), BSM.into()),
                ("User-Agent".into(), PLAIN_UA.into()),
                ("Content-Type".into(), sprov::CONTENT_TYPE.into()),
            ],
            body: registration(),
        };
        // (d) No certificate, or one from a CA the BSM does not trust: no HTTP answer at all.
        for cert in [ClientCert::None, ClientCert::Foreign] {
            let result = pki.https_client(bsm.https, cert).send(&request).await;
            assert!(result.is_err(), "{cert:?}: {result:?}");
        }
        // The trusted certificate reaches the Digest layer.
        let answer = pki.https_client(bsm.https, ClientCert::Trusted).send(&request).await.unwrap();
        assert_eq!(answer.status, 401);
        bsm.stop().await;
        bsf.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_oversized_ids_get_400_and_nothing_is_stored() {
    with_limit(async {
        let clock = TestClock::new();
        let pki = Pki::new();
        let clients = ClientCertificates::Required(pki.ca.roots());
        let (bsf, bsm, creds) = setup(&clock, &pki, clients, BcastClientIdPolicy::Request).await;
        let mut https = pki.https_client(bsm.https, ClientCert::Trusted);
        let ct = sprov::CONTENT_TYPE;
        let bought = ua_exchange(&mut https, &creds, SPROV, ct, &service_request(), PLAIN_UA).await.unwrap();
        assert_eq!(bought.status, 200);

        // (e) Each malformed form, with the reason in the body.
        let oversized = "A".repeat(MAX_CLIENT_ID_BASE64_LEN + 4);
        let one_octet_too_many = STANDARD.encode([1u8; 257]);
        let twice = format!("{} BCAST_Client_ID=AQID", ua_with("AQID"));
        for (ua, reason) in [
            (ua_with("not*base64"), "not base64"),
            (ua_with("AQI"), "not base64"),
            (ua_with(""), "empty"),
            (ua_with(&oversized), "limit"),
            (ua_with(&one_octet_too_many), "limit"),
            (twice, "more than one"),
        ] {
            let answer = ua_exchange(&mut https, &creds, SPROV, ct, &registration(), &ua).await.unwrap();
            assert_eq!(answer.status, 400, "{ua}: {answer:?}");
            assert!(body(&answer).contains(reason), "{ua}: {}", body(&answer));
        }
        assert_eq!(stored_id(&bsm).await, None);

        bsm.stop().await;
        bsf.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_default_policy_registrations_go_on_without_the_id() {
    with_limit(async {
        let clock = TestClock::new();
        let pki = Pki::new();
        let clients = ClientCertificates::Required(pki.ca.roots());
        let (bsf, bsm, creds) = setup(&clock, &pki, clients, BcastClientIdPolicy::default()).await;
        let mut https = pki.https_client(bsm.https, ClientCert::Trusted);
        let ct = sprov::CONTENT_TYPE;
        let bought = ua_exchange(&mut https, &creds, SPROV, ct, &service_request(), PLAIN_UA).await.unwrap();
        assert_eq!(bought.status, 200);
        let answer = ua_exchange(&mut https, &creds, SPROV, ct, &registration(), PLAIN_UA).await.unwrap();
        assert_eq!(answer.status, 200, "not asked: {answer:?}");
        // Sent anyway over mutual TLS: neither read nor stored.
        let answer = ua_exchange(&mut https, &creds, SPROV, ct, &registration(), &ua_with("!!")).await.unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(stored_id(&bsm).await, None);
        // Over plain HTTP it is refused even so.
        let mut plain = HttpClient::plain(bsm.http.to_string());
        let refused = ua_exchange(&mut plain, &creds, SPROV, ct, &registration(), &ua_with("AQID")).await.unwrap();
        assert_eq!(refused.status, 403);
        bsm.stop().await;
        bsf.stop().await;
    })
    .await;
}
