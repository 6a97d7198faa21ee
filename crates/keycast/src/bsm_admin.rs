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
//!   next key when its schedule says so (prints the key, or that none is due).
//! - `terminal --impi …`: the terminal, its registration and purchases (JSON).

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
    },
    /// A terminal, its registration and purchases (JSON).
    Terminal {
        /// Its IMPI.
        #[arg(long)]
        impi: String,
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
            BsmCommand::Rollover { group, mcc, mnc, key_lifetime_secs, lead_secs } => {
                let body = serde_json::json!({
                    "mcc": mcc, "mnc": mnc, "key_lifetime_secs": key_lifetime_secs, "lead_secs": lead_secs,
                });
                let path = format!("/admin/v1/key-groups/{group}/rollover");
                let made = admin.expect("POST", &path, Some(&body), &[200, 201]).await?;
                if made.get("due").is_some_and(|d| d == false) {
                    println!("no key due in Key Group {group}");
                } else {
                    println!("made {}", made);
                }
                Ok(())
            }
            BsmCommand::Terminal { impi } => {
                let t = admin.expect("GET", &format!("/admin/v1/terminals/{impi}"), None, &[200]).await?;
                println!("{}", serde_json::to_string_pretty(&t).unwrap_or_default());
                Ok(())
            }
        }
    })?;
    Ok(ExitCode::SUCCESS)
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
