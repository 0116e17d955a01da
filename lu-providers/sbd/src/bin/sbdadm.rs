//! sbdadm: manage sbd LUs (a thin client of stmfd, like COMSTAR's sbdadm).
//!
//! Requests go to the sbd provider through the daemon's `provider-control`; delete-lu also
//! removes the LU's view entries in the core unless `-k` is given.

use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use std::process::ExitCode;
use stmf::cli::lu::{
    self, CreateLuArgs, DeleteLuArgs, ImportLuArgs, ModifyLuArgs, DEFAULT_LU_PROVIDER,
};
use stmf::cli::{self, print_fields, state_label, Client, GlobalOpts};
use stmf::control::GuidsArgs;
use stmf::{Guid, LuInfo};

const PROG: &str = "sbdadm";

/// Manage SCSI block device (sbd) LUs: files, block devices and RAM disks served by stmfd.
#[derive(Parser, Debug)]
#[command(name = "sbdadm", version)]
struct Cli {
    #[command(flatten)]
    global: GlobalOpts,
    #[command(subcommand)]
    cmd: Cmd,
}

// The names are the subcommands', as COMSTAR spells them.
#[allow(clippy::enum_variant_names)]
#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create an LU on a file (created sparse when missing), a block device, or RAM.
    CreateLu(CreateLuArgs),
    /// Delete an LU; its data and metadata are kept (import-lu brings it back).
    DeleteLu(DeleteLuArgs),
    /// Bring back an LU from its data or metadata file.
    ImportLu(ImportLuArgs),
    /// Change an LU's properties or grow it.
    ModifyLu(ModifyLuArgs),
    /// List sbd LUs.
    ListLu {
        /// Verbose: every property.
        #[arg(short)]
        verbose: bool,
        /// LU GUIDs (all when none).
        guids: Vec<Guid>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => cli::fail(PROG, format!("{e:#}")),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let json = cli.global.json;
    let mut c = Client::connect(&cli.global.socket)?;
    match cli.cmd {
        Cmd::CreateLu(a) => {
            let r = lu::create_lu(&mut c, &a)?;
            if json {
                cli::print_json(&r.reply);
            } else {
                println!("Created the following LU:\n");
                print_table(&[describe(&mut c, &a.provider, r.guid)?]);
            }
        }
        Cmd::ImportLu(a) => {
            let r = lu::import_lu(&mut c, &a)?;
            if json {
                cli::print_json(&r.reply);
            } else {
                println!("Imported the following LU:\n");
                print_table(&[describe(&mut c, &a.provider, r.guid)?]);
            }
        }
        Cmd::ModifyLu(a) => {
            let r = lu::modify_lu(&mut c, &a)?;
            if json {
                cli::print_json(&r.reply);
            }
        }
        Cmd::DeleteLu(a) => {
            let r = lu::delete_lu(&mut c, &a)?;
            if json {
                cli::print_json(&r.reply);
            }
        }
        Cmd::ListLu { verbose, guids } => list(&mut c, json, verbose, &guids)?,
    }
    Ok(())
}

/// The GUID of an entry of sbd's `list-lu` (`None` for a saved LU that failed to import).
fn guid_of(d: &Value) -> Option<Guid> {
    d.get("guid")?.as_str()?.parse().ok()
}

/// sbd's `list-lu` entries.
fn sbd_lus(c: &mut Client, provider: &str) -> anyhow::Result<Vec<Value>> {
    let reply = lu::provider_control(c, provider, json!({"op": "list-lu"}))?;
    match reply.get("lus") {
        Some(Value::Array(a)) => Ok(a.clone()),
        _ => anyhow::bail!("unexpected reply from provider {provider}: {reply}"),
    }
}

/// sbd's description of one LU.
fn describe(c: &mut Client, provider: &str, guid: Guid) -> anyhow::Result<Value> {
    sbd_lus(c, provider)?
        .into_iter()
        .find(|d| guid_of(d) == Some(guid))
        .ok_or_else(|| anyhow::anyhow!("provider {provider} does not list LU {guid}"))
}

fn print_table(lus: &[Value]) {
    let rows: Vec<(String, String, String)> = lus
        .iter()
        .filter_map(|d| {
            let g = guid_of(d)?;
            let size = d.get("size").map(cli::value_label).unwrap_or_default();
            Some((g.to_string(), size, lu::sbd_source(d)))
        })
        .collect();
    lu::print_lu_table(&rows);
}

fn list(c: &mut Client, json: bool, verbose: bool, guids: &[Guid]) -> anyhow::Result<()> {
    let provider = DEFAULT_LU_PROVIDER;
    let all = sbd_lus(c, provider)?;
    let (lus, failed): (Vec<Value>, Vec<Value>) =
        all.into_iter().partition(|d| guid_of(d).is_some());
    let lus: Vec<Value> = if guids.is_empty() {
        lus
    } else {
        let mut out = Vec::with_capacity(guids.len());
        for g in guids {
            let d = lus
                .iter()
                .find(|d| guid_of(d) == Some(*g))
                .ok_or_else(|| anyhow::anyhow!("LU {g} not found in provider {provider}"))?;
            if !out.contains(d) {
                out.push(d.clone());
            }
        }
        out
    };
    if json {
        let mut v = lus;
        if guids.is_empty() {
            v.extend(failed);
        }
        cli::print_json(&Value::Array(v));
        return Ok(());
    }
    if !verbose {
        println!("Found {} LU(s)\n", lus.len());
        print_table(&lus);
    } else {
        // The core knows the state and the view entries.
        let want: Vec<Guid> = lus.iter().filter_map(guid_of).collect();
        let core: Vec<LuInfo> = if want.is_empty() {
            Vec::new()
        } else {
            c.call_as("list-lu", &GuidsArgs { guids: Some(want) })?
        };
        for d in &lus {
            let Some(g) = guid_of(d) else { continue };
            println!("LU Name: {g}");
            let mut f: Vec<(String, String)> = Vec::new();
            if let Some(l) = core.iter().find(|l| l.guid == g) {
                let state = match &l.failed {
                    Some(why) => format!("{} (failed: {why})", state_label(l.state)),
                    None => state_label(l.state),
                };
                f.push(("Operational Status".into(), state));
                f.push(("View Entry Count".into(), l.views.to_string()));
            }
            let alias = d.get("alias").and_then(Value::as_str).unwrap_or_default();
            f.push((
                "Alias".into(),
                if alias.is_empty() {
                    "-".into()
                } else {
                    alias.into()
                },
            ));
            f.extend(lu::detail_fields(d));
            print_fields(4, &f);
        }
    }
    if guids.is_empty() {
        for d in &failed {
            let saved = d.get("saved").map(cli::value_label).unwrap_or_default();
            let why = d.get("reason").map(cli::value_label).unwrap_or_default();
            println!("Not imported: {saved}: {why}");
        }
    }
    Ok(())
}
