//! `keycast bsm …`: the operator's commands over a running BSM's admin API
//! ([`keycast_bsm::http::admin`]), reached at `[admin] listen` of the same configuration file
//! `keycast serve bsm` runs from, with the token of `[admin] token_file`.
//!
//! - `apply FILE.toml`: puts a catalogue — `[[service]]`, `[[program]]`, `[[purchase_item]]`,
//!   `[[offer]]` tables with the admin API's fields (and `id`) — in that order, so that references
//!   resolve; stops at the first refusal, naming the entry.
//! - `show services|programs|purchase-items|offers [--json]`.
//! - `keys --group N [--json]`: the group's keys and windows (never key bytes).
//! - `rollover --group N --mcc … --mnc … --key-lifetime-secs … --lead-secs …`: makes the group's
//!   next key when its schedule says so (prints the key, or that none is due), then follows the
//!   campaign that queues its pushes with a progress bar until it ends (`--no-wait` returns at
//!   once).
//! - `key-end --group N --number M --until T`: moves a key's end (extends or shortens its life)
//!   and follows the campaign that pushes the new window.
//! - `campaigns [--json]`: every campaign and how far it got.
//! - `deliveries --group N --number M`: how the key's deliveries stand (rows, terminals, highest
//!   version, rows per state), as JSON.
//! - `import FILE.jsonl`: bulk import of subscribers, one admin-API import object per line
//!   (`{"impi", "registration", "purchases"}`), in batches, each all or nothing, with a progress
//!   bar; stops at the first refused batch, naming its first line.
//! - `terminal --impi …`: the terminal, its registration and purchases (JSON).
//! - `guide export DIR`: the published Service Guide, read from the public routes of the
//!   provisioning listener (`listen`; no admin token needed), written as `DIR/index.json`,
//!   `DIR/fragments/<id>.xml`, `DIR/usd/<service>.xml`, `DIR/spd/<service>.xml`. When the BSM
//!   listens with TLS (`[tls]`), over HTTPS to its `fqdn`, trusting `--ca-file`, and showing
//!   `--client-cert`/`--client-key` where the listener requires client certificates.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use keycast_gba::client::HttpRequest;
use keycast_gba::client::http::{HttpClient, UbTransport as _};
use serde::Deserialize;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::bsf_cmd::{current_thread_runtime, read_secret_file};
use crate::bsm_cmd::BsmSettings;

/// `keycast bsm`.
#[derive(Debug, Args)]
pub struct BsmArgs {
    /// The BSM's TOML configuration file (its `[admin]` section says where and how to connect).
    #[arg(long, value_name = "PATH", env = "KEYCAST_BSM_CONFIG")]
    pub config: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: BsmCommand,
}

/// The BSM administration commands.
#[derive(Debug, Subcommand)]
pub enum BsmCommand {
    /// Put a catalogue file (services, programs, purchase items, offers).
    Apply {
        /// The catalogue TOML file.
        file: PathBuf,
    },
    /// List part of the catalogue.
    Show {
        /// What to list.
        what: Listing,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A key group's keys (IDs and windows).
    Keys {
        /// Key Group.
        #[arg(long)]
        group: u16,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make a key group's next key if its schedule says one is due.
    Rollover {
        /// Key Group.
        #[arg(long)]
        group: u16,
        /// MCC of the Key Domain.
        #[arg(long)]
        mcc: String,
        /// MNC of the Key Domain.
        #[arg(long)]
        mnc: String,
        /// Lifetime of each key, seconds.
        #[arg(long)]
        key_lifetime_secs: u64,
        /// How long before the current key ends the next one is made, seconds.
        #[arg(long)]
        lead_secs: u64,
        /// Return once the key is made, without following its campaign.
        #[arg(long)]
        no_wait: bool,
    },
    /// Move a key's end (extend or shorten its life); its new window is pushed.
    KeyEnd {
        /// Key Group.
        #[arg(long)]
        group: u16,
        /// Key Number.
        #[arg(long)]
        number: u16,
        /// The new end, Unix seconds.
        #[arg(long)]
        until: u64,
        /// Return at once, without following the campaign.
        #[arg(long)]
        no_wait: bool,
    },
    /// Key campaigns and their progress.
    Campaigns {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// How a key's deliveries stand (JSON).
    Deliveries {
        /// Key Group.
        #[arg(long)]
        group: u16,
        /// Key Number.
        #[arg(long)]
        number: u16,
    },
    /// Import subscribers from a JSON-lines file.
    Import {
        /// One subscriber per line: `{"impi", "registration"?, "purchases"}`.
        file: PathBuf,
        /// Subscribers per request.
        #[arg(long, default_value_t = 5_000)]
        batch: usize,
    },
    /// The published Service Guide.
    Guide {
        /// What to do with it.
        #[command(subcommand)]
        command: GuideCommand,
    },
    /// A terminal, its registration and purchases (JSON).
    Terminal {
        /// Its IMPI.
        #[arg(long)]
        impi: String,
    },
}

/// `keycast bsm guide …`.
#[derive(Debug, Subcommand)]
pub enum GuideCommand {
    /// Write every fragment, USD and Service Protection Description as files.
    Export {
        /// The directory (made if missing).
        dir: PathBuf,
        /// PEM roots the BSM's certificate chains to (a BSM with `[tls]`).
        #[arg(long, value_name = "PEM")]
        ca_file: Option<PathBuf>,
        /// PEM client certificate chain, for a listener that requires client certificates.
        #[arg(long, value_name = "PEM", requires = "client_key")]
        client_cert: Option<PathBuf>,
        /// PEM private key of --client-cert.
        #[arg(long, value_name = "PEM", requires = "client_cert")]
        client_key: Option<PathBuf>,
    },
}

/// Catalogue listings.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Listing {
    /// Services.
    Services,
    /// Pay-per-view programs.
    Programs,
    /// Purchase items.
    PurchaseItems,
    /// Offers (PurchaseData).
    Offers,
}

impl Listing {
    fn path(self) -> &'static str {
        match self {
            Listing::Services => "/admin/v1/services",
            Listing::Programs => "/admin/v1/programs",
            Listing::PurchaseItems => "/admin/v1/purchase-items",
            Listing::Offers => "/admin/v1/offers",
        }
    }
}

/// A catalogue file: each table's entries carry `id` plus the admin API's body fields.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Catalogue {
    #[serde(default)]
    service: Vec<toml::Table>,
    #[serde(default)]
    program: Vec<toml::Table>,
    #[serde(default)]
    purchase_item: Vec<toml::Table>,
    #[serde(default)]
    offer: Vec<toml::Table>,
}

/// The admin API's address and token, from the BSM's configuration.
struct Admin {
    client: HttpClient,
    token: Zeroizing<String>,
}

impl Admin {
    fn new(settings: &BsmSettings) -> Result<Self> {
        let (listen, file) = settings.admin.as_ref().ok_or_else(|| {
            anyhow!("{}: no [admin] token_file: this BSM serves no admin API", settings.path.display())
        })?;
        let token = Zeroizing::new(read_secret_file(file, "admin token")?.trim().to_owned());
        Ok(Admin { client: HttpClient::plain(listen.clone()), token })
    }

    /// One call; the answer's status and JSON body (`Null` when empty).
    async fn call(&mut self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        let mut headers = vec![
            ("Host".to_owned(), "keycast-bsm-admin".to_owned()),
            ("Authorization".to_owned(), format!("Bearer {}", self.token.as_str())),
        ];
        if body.is_some() {
            headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
        }
        let request = HttpRequest {
            method: method.to_owned(),
            uri: path.to_owned(),
            headers,
            body: body.map(Value::to_string).unwrap_or_default().into_bytes(),
        };
        let response = self.client.send(&request).await.map_err(|e| anyhow!("admin API unreachable: {e}"))?;
        let value = if response.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&response.body).context("the admin API answered something that is not JSON")?
        };
        Ok((response.status, value))
    }

    /// A call that must succeed with one of `ok`.
    async fn expect(&mut self, method: &str, path: &str, body: Option<&Value>, ok: &[u16]) -> Result<Value> {
        let (status, value) = self.call(method, path, body).await?;
        if ok.contains(&status) {
            return Ok(value);
        }
        let why = value.get("error").and_then(Value::as_str).unwrap_or("no reason given");
        bail!("{method} {path}: {status}: {why}")
    }
}

/// Runs `keycast bsm …`.
///
/// # Errors
/// Configuration, connection and refusal errors.
pub fn run_bsm(args: &BsmArgs) -> Result<ExitCode> {
    let settings = BsmSettings::load(&args.config)?;
    if let BsmCommand::Guide { command: GuideCommand::Export { dir, ca_file, client_cert, client_key } } = &args.command
    {
        let client = match (&settings.tls, ca_file) {
            (None, _) => HttpClient::plain(settings.listen.clone()),
            (Some(_), None) => bail!(
                "the BSM listens with TLS ([tls] in {}): give --ca-file, the PEM roots its certificate chains to",
                args.config.display()
            ),
            (Some(_), Some(ca)) => {
                let tls = crate::terminal_cmd::BsmTlsFiles::new(ca.clone(), client_cert.clone(), client_key.clone());
                let name = rustls_pki_types::ServerName::try_from(settings.fqdn.clone())
                    .with_context(|| format!("fqdn {:?} is no server name", settings.fqdn))?;
                HttpClient::tls(settings.listen.clone(), name, tls.client_config()?)
            }
        };
        current_thread_runtime()?.block_on(export_guide(&settings, client, dir))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut admin = Admin::new(&settings)?;
    let runtime = current_thread_runtime()?;
    runtime.block_on(async {
        match &args.command {
            BsmCommand::Apply { file } => apply(&mut admin, file).await,
            BsmCommand::Show { what, json } => {
                let list = admin.expect("GET", what.path(), None, &[200]).await?;
                print_list(&list, *json);
                Ok(())
            }
            BsmCommand::Keys { group, json } => {
                let list = admin.expect("GET", &format!("/admin/v1/key-groups/{group}"), None, &[200]).await?;
                print_list(&list, *json);
                Ok(())
            }
            BsmCommand::Rollover { group, mcc, mnc, key_lifetime_secs, lead_secs, no_wait } => {
                let body = serde_json::json!({
                    "mcc": mcc, "mnc": mnc, "key_lifetime_secs": key_lifetime_secs, "lead_secs": lead_secs,
                });
                let path = format!("/admin/v1/key-groups/{group}/rollover");
                let made = admin.expect("POST", &path, Some(&body), &[200, 201]).await?;
                if made.get("due").is_some_and(|d| d == false) {
                    println!("no key due in Key Group {group}");
                    return Ok(());
                }
                println!("made {made}");
                follow(&mut admin, &made, *no_wait).await
            }
            BsmCommand::KeyEnd { group, number, until, no_wait } => {
                let path = format!("/admin/v1/key-groups/{group}/keys/{number}/until");
                let moved = admin.expect("PUT", &path, Some(&serde_json::json!({ "until": until })), &[200]).await?;
                println!("moved {moved}");
                follow(&mut admin, &moved, *no_wait).await
            }
            BsmCommand::Campaigns { json } => {
                let list = admin.expect("GET", "/admin/v1/campaigns", None, &[200]).await?;
                print_list(&list, *json);
                Ok(())
            }
            BsmCommand::Deliveries { group, number } => {
                let path = format!("/admin/v1/key-groups/{group}/keys/{number}/deliveries");
                println!("{}", admin.expect("GET", &path, None, &[200]).await?);
                Ok(())
            }
            BsmCommand::Import { file, batch } => import(&mut admin, file, *batch).await,
            BsmCommand::Guide { .. } => Ok(()),
            BsmCommand::Terminal { impi } => {
                let t = admin.expect("GET", &format!("/admin/v1/terminals/{impi}"), None, &[200]).await?;
                println!("{}", serde_json::to_string_pretty(&t).unwrap_or_default());
                Ok(())
            }
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `guide export DIR`: the index, then every document it lists, as files.
async fn export_guide(settings: &BsmSettings, mut client: HttpClient, dir: &std::path::Path) -> Result<()> {
    let mut get = async |path: &str| -> Result<Vec<u8>> {
        let request = HttpRequest {
            method: "GET".into(),
            uri: path.to_owned(),
            headers: vec![("Host".into(), settings.fqdn.clone())],
            body: Vec::new(),
        };
        let r = client.send(&request).await.map_err(|e| anyhow!("the BSM is unreachable: {e}"))?;
        if r.status != 200 {
            bail!("GET {path}: {}", r.status);
        }
        Ok(r.body)
    };
    let index_bytes = get("/guide/v1/index.json").await?;
    let index: Value = serde_json::from_slice(&index_bytes).context("the guide index is not JSON")?;
    let mut written = 0usize;
    for (list, key, sub) in [("fragments", "id", "fragments"), ("usd", "service", "usd"), ("spd", "service", "spd")] {
        std::fs::create_dir_all(dir.join(sub)).with_context(|| format!("making {}", dir.join(sub).display()))?;
        for entry in index.get(list).and_then(Value::as_array).into_iter().flatten() {
            let Some(id) = entry.get(key).and_then(Value::as_str) else {
                bail!("the index lists an entry without `{key}`")
            };
            // The id names a file: nothing that could leave the directory.
            if id.is_empty() || id.starts_with('.') || id.contains(['/', '\\']) {
                bail!("the index lists an id that is not a file name: {id:?}");
            }
            let body = get(&format!("/guide/v1/{sub}/{id}.xml")).await?;
            let path = dir.join(sub).join(format!("{id}.xml"));
            std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
            written += 1;
        }
    }
    std::fs::write(dir.join("index.json"), &index_bytes).context("writing index.json")?;
    println!("{written} documents written to {}", dir.display());
    Ok(())
}

/// How often a followed campaign is polled.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// Follows the campaign named in `answer` (`{"campaign": id, …}`) with a progress bar until it
/// ends, then prints its counts.
async fn follow(admin: &mut Admin, answer: &Value, no_wait: bool) -> Result<()> {
    let Some(id) = answer.get("campaign").and_then(Value::as_u64) else { bail!("the admin API named no campaign") };
    if no_wait {
        println!("campaign {id} runs in the BSM; `keycast bsm campaigns` shows its progress");
        return Ok(());
    }
    let path = format!("/admin/v1/campaigns/{id}");
    let mut bar: Option<indicatif::ProgressBar> = None;
    loop {
        let c = admin.expect("GET", &path, None, &[200]).await?;
        let field = |name: &str| c.get(name).and_then(Value::as_u64).unwrap_or(0);
        let bar = bar.get_or_insert_with(|| crate::bsf_cmd::progress_bar(field("subscribers"), "campaign"));
        bar.set_length(field("subscribers").max(field("terminals")));
        bar.set_position(field("terminals"));
        if c.get("finished_at").is_some_and(|f| !f.is_null()) {
            bar.finish_and_clear();
            println!(
                "campaign {id} finished: {} terminals looked at, {} deliveries queued",
                field("terminals"),
                field("queued")
            );
            return Ok(());
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

/// Imports a JSON-lines file of subscribers in batches (module docs).
async fn import(admin: &mut Admin, file: &PathBuf, batch: usize) -> Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value =
            serde_json::from_str(line).map_err(|e| anyhow!("{}:{}: not JSON: {e}", file.display(), n + 1))?;
        rows.push((n + 1, value));
    }
    let bar = crate::bsf_cmd::progress_bar(rows.len() as u64, "importing");
    let mut imported = 0u64;
    for chunk in rows.chunks(batch.max(1)) {
        let body = Value::Array(chunk.iter().map(|(_, v)| v.clone()).collect());
        let first = chunk.first().map_or(0, |(n, _)| *n);
        let done =
            admin.expect("POST", "/admin/v1/terminals/import", Some(&body), &[200]).await.with_context(|| {
                format!("{}: the batch from line {first} was refused (earlier batches are stored)", file.display())
            })?;
        imported += done.get("imported").and_then(Value::as_u64).unwrap_or(0);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    println!("imported {imported} subscribers");
    Ok(())
}

async fn apply(admin: &mut Admin, file: &PathBuf) -> Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let catalogue: Catalogue = toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    let mut count = 0;
    for (table, path) in [
        (&catalogue.service, "/admin/v1/services"),
        (&catalogue.program, "/admin/v1/programs"),
        (&catalogue.purchase_item, "/admin/v1/purchase-items"),
        (&catalogue.offer, "/admin/v1/offers"),
    ] {
        for entry in table {
            let mut entry = entry.clone();
            let id = match entry.remove("id") {
                Some(toml::Value::String(id)) if !id.is_empty() && !id.contains(['/', '?', '#', ' ']) => id,
                _ => bail!("{}: every entry needs an `id` (no '/', '?', '#' or spaces)", file.display()),
            };
            let body = serde_json::to_value(&entry).context("entry to JSON")?;
            admin
                .expect("PUT", &format!("{path}/{id}"), Some(&body), &[204])
                .await
                .with_context(|| format!("{}: entry {id:?}", file.display()))?;
            count += 1;
        }
    }
    println!("applied {count} catalogue entries");
    Ok(())
}

/// Prints a JSON array as JSON or as a table (one row per object, columns in the first object's
/// key order).
fn print_list(list: &Value, json: bool) {
    if json {
        println!("{list}");
        return;
    }
    let Some(rows) = list.as_array() else {
        println!("{list}");
        return;
    };
    let Some(first) = rows.first().and_then(Value::as_object) else {
        println!("(none)");
        return;
    };
    let columns: Vec<&String> = first.keys().collect();
    let cell = |row: &Value, c: &str| match row.get(c) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    };
    let widths: Vec<usize> =
        columns.iter().map(|c| rows.iter().map(|r| cell(r, c).len()).chain([c.len()]).max().unwrap_or(0)).collect();
    let line = |cells: Vec<String>| {
        cells.iter().zip(&widths).map(|(s, w)| format!("{s:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_owned()
    };
    println!("{}", line(columns.iter().map(|c| (*c).clone()).collect()));
    for row in rows {
        println!("{}", line(columns.iter().map(|c| cell(row, c)).collect()));
    }
}
