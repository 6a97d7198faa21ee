//! (n) of `keycast demo`: the BCAST_Client_ID exchange over mutual TLS (seed §6.9.2).
//!
//! The BSM serves its provisioning routes once more, on a loopback port over TLS with client
//! certificates required and the BCAST_Client_ID asked for at Registration (keycast-bsm's
//! `BcastClientIdPolicy::Request`). The certificates come from a test CA the demo makes with
//! rcgen (fresh keys each run; nothing of them is printed). Terminal B's card moves to a device
//! with a client certificate: first without an ID, so the BSM's `403 send_BCAST_Client_ID` is
//! reported as a refusal; then with one, so the same Registration goes again carrying the ID
//! over the mutually authenticated connection, is answered, and the BSM stores the ID.

use std::net::SocketAddr;

use keycast_bsm::domain::TerminalId;
use keycast_bsm::http::tls::{ClientCertificates, tls_server_config};
use keycast_bsm::store::BsmStore as _;
use keycast_provisioning::sprov::StatusCode;
use keycast_terminal::ltkm_intake::Interface;
use keycast_terminal::provisioning::{BcastClientId, ProvisioningError, Response};
use keycast_terminal::shell::{ShellError, bsm_tls_config};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

use super::bsm::{Bsm, IMPI_B, Shell, demo_client, new_shell_at, shell_apdus};
use super::{BSM_FQDN, CardReader, DemoRng, Narrator, insert_card};
use keycast_crypto::keys::{Opc, SubscriberKey};

/// The device's BCAST_Client_ID (a demo choice).
const CLIENT_ID: &[u8] = b"bcast-client-device-b";

/// A leaf certificate chain and its key.
type Leaf = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The demo's test CA: roots, the BSM's server certificate, the device's client certificate.
struct TestPki {
    roots: RootCertStore,
    server: Leaf,
    device: Leaf,
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> Result<Leaf, String> {
    let mut params = CertificateParams::new(vec![name.to_owned()]).map_err(|e| e.to_string())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.signed_by(&key, issuer).map_err(|e| e.to_string())?;
    Ok((vec![cert.der().clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))))
}

fn test_pki() -> Result<TestPki, String> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "Keycast demo test CA");
    let ca_key = KeyPair::generate().map_err(|e| e.to_string())?;
    let issuer = CertifiedIssuer::self_signed(params, ca_key).map_err(|e| e.to_string())?;
    let mut roots = RootCertStore::empty();
    roots.add(issuer.der().clone()).map_err(|e| e.to_string())?;
    Ok(TestPki {
        roots,
        server: leaf(&issuer, BSM_FQDN, ExtendedKeyUsagePurpose::ServerAuth)?,
        device: leaf(&issuer, "device-b.devices.example.org", ExtendedKeyUsagePurpose::ClientAuth)?,
    })
}

/// (n): see the module docs. Takes terminal B's shell (its card moves to the TLS device).
pub(super) async fn run_client_id(n: &mut Narrator, rng: &mut DemoRng, bsm: &Bsm, bsf: SocketAddr, mut b: Shell) {
    n.heading("(n) BCAST_Client_ID over mutual TLS: 403 send_BCAST_Client_ID, then the Registration with the ID");
    let pki = match test_pki() {
        Ok(p) => p,
        Err(e) => {
            n.check("test CA (rcgen): BSM server and device client certificates", Err(e));
            return;
        }
    };
    let started = match tls_server_config(
        pki.server.0.clone(),
        pki.server.1.clone_key(),
        ClientCertificates::Required(pki.roots.clone()),
    ) {
        Ok(tls) => bsm.serve_mutual_tls(tls).await,
        Err(e) => Err(e.to_string()),
    };
    let (addr, served) = match started {
        Ok(s) => s,
        Err(e) => {
            n.check("BSM serves provisioning over mutual TLS", Err(e));
            return;
        }
    };
    n.check(
        "BSM serves its provisioning routes over TLS on 127.0.0.1:<port>, client certificates required, BCAST_Client_ID requested",
        Ok("certificates from the demo's test CA (rcgen)".to_owned()),
    );
    // What B's device knows: its bootstrap and its purchases (B deregistered in (m)).
    let bootstrap = b.bootstrap_state().current().cloned();
    let purchases: Vec<_> = b.client().purchases().iter().cloned().collect();
    let mut card = take_card(&mut b);
    drop(b);
    for with_id in [false, true] {
        let mut client = demo_client();
        client.bcast_client_id = if with_id { BcastClientId::new(CLIENT_ID.to_vec()) } else { None };
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut shell =
            match new_shell_at((bsm, addr), bsf, card, IMPI_B, (Interface::OmaBcast, loopback), client, rng).await {
                Ok(s) => s,
                Err(e) => {
                    n.check("a terminal shell over mutual TLS starts", Err(e));
                    served.stop().await;
                    return;
                }
            };
        match bsm_tls_config(pki.roots.clone(), Some((pki.device.0.clone(), pki.device.1.clone_key()))) {
            Ok(tls) => shell.use_bsm_tls(tls, ServerName::try_from(BSM_FQDN).expect("constant name")),
            Err(e) => n.check("the device's TLS configuration", Err(e.to_string())),
        }
        if let Some(bootstrapped) = bootstrap.clone() {
            shell.restore_bootstrap(bootstrapped);
        }
        for p in &purchases {
            shell.client_mut().purchases_mut().insert(p.clone());
        }
        let r = shell.connect().await;
        shell_apdus(n, &mut shell);
        if with_id {
            let r = match r {
                Ok(Some(answer)) => match &answer.response {
                    Response::Registration(reg)
                        if reg.status == StatusCode::Success
                            && !answer.ltkms.is_empty()
                            && answer.ltkms.iter().all(Result::is_ok) =>
                    {
                        Ok(format!(
                            "403 send_BCAST_Client_ID, then the Registration again with the ID ({} octets): success; the card takes the {} LTKM(s) of the answer",
                            CLIENT_ID.len(),
                            answer.ltkms.len()
                        ))
                    }
                    other => Err(format!("answer {other:?}, LTKMs {:?}", answer.ltkms)),
                },
                Ok(None) => Err("nothing registered".to_owned()),
                Err(e) => Err(e.to_string()),
            };
            n.check("device B with a BCAST_Client_ID registers (OMA BCAST RegistrationRequest over mutual TLS)", r);
            let stored = bsm.store.terminal(&TerminalId(IMPI_B.to_owned())).await;
            n.check(
                "the BSM stores the device's BCAST_Client_ID",
                match stored {
                    Ok(Some(t)) if t.bcast_client_id.as_ref().map(|id| id.as_bytes()) == Some(CLIENT_ID) => {
                        Ok(format!("{:?} with B's terminal record", String::from_utf8_lossy(CLIENT_ID)))
                    }
                    Ok(other) => Err(format!("{:?}", other.map(|t| t.bcast_client_id))),
                    Err(e) => Err(e.to_string()),
                },
            );
        } else {
            n.check(
                "device B without a BCAST_Client_ID: the BSM asks for it at Registration",
                match r {
                    Err(ShellError::Provisioning(ProvisioningError::ClientIdRequested)) => {
                        Ok("403 send_BCAST_Client_ID; the device has none to send and reports it".to_owned())
                    }
                    Err(e) => Err(e.to_string()),
                    Ok(_) => Err("registered without an ID".to_owned()),
                },
            );
        }
        card = take_card(&mut shell);
        drop(shell);
    }
    drop(card);
    served.stop().await;
}

/// Takes the card out of a shell (keycast-terminal's shell cannot hand it back): a blank card
/// takes its slot before the shell is dropped.
pub(super) fn take_card(shell: &mut Shell) -> CardReader {
    let blank = insert_card(
        "001010000000009",
        "001010000000009@ims.mnc001.mcc001.3gppnetwork.org",
        "8900100000000000009",
        SubscriberKey::from_bytes([0; 16]),
        Opc::from_bytes([0; 16]),
        [0, 0, 0, 0, 1, 0],
    );
    core::mem::replace(shell.card_mut(), blank)
}
