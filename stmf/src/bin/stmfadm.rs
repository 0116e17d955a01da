//! stmfadm: manage the rstmf SCSI target framework (a thin client of stmfd).

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;
use stmf::cli::lu::{self, CreateLuArgs, DeleteLuArgs, ImportLuArgs, ModifyLuArgs};
use stmf::cli::{self, print_fields, state_label, Client, GlobalOpts};
use stmf::control::{
    AddViewArgs, GuidArgs, GuidsArgs, ListViewArgs, MembersArgs, NameArgs, NamesArgs, NoArgs,
    PathArgs, ProviderControlArgs, RemoveViewArgs,
};
use stmf::{GroupInfo, Guid, LportInfo, LuInfo, ProviderInfo, StateInfo, ViewEntry};

const PROG: &str = "stmfadm";

/// Manage the rstmf SCSI target framework: providers, LUs, host and target groups, views,
/// targets. Talks to stmfd over its control socket.
#[derive(Parser, Debug)]
#[command(name = "stmfadm", version)]
struct Cli {
    #[command(flatten)]
    global: GlobalOpts,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Show the operational and configuration status.
    ListState,
    /// List the loaded providers.
    ListProvider {
        /// Verbose.
        #[arg(short)]
        verbose: bool,
    },
    /// Load a provider library.
    LoadProvider {
        /// Path of the library (made absolute).
        path: PathBuf,
    },
    /// Unload a provider (its objects must be offline).
    UnloadProvider {
        /// Provider name.
        name: String,
    },
    /// Send a JSON request to a provider and print its reply.
    ProviderControl {
        /// Provider name.
        provider: String,
        /// Request (JSON).
        #[arg(value_parser = parse_json)]
        request: Value,
    },
    /// Create a host group.
    CreateHg {
        /// Group name.
        name: String,
    },
    /// Delete a host group.
    DeleteHg {
        /// Group name.
        name: String,
    },
    /// Add initiators to a host group.
    AddHgMember(Members),
    /// Remove initiators from a host group.
    RemoveHgMember(Members),
    /// List host groups.
    ListHg(ListNames),
    /// Create a target group.
    CreateTg {
        /// Group name.
        name: String,
    },
    /// Delete a target group.
    DeleteTg {
        /// Group name.
        name: String,
    },
    /// Add targets to a target group.
    AddTgMember(Members),
    /// Remove targets from a target group.
    RemoveTgMember(Members),
    /// List target groups.
    ListTg(ListNames),
    /// Add a view entry to an LU (defaults: all hosts, all targets, lowest free LUN).
    #[command(disable_help_flag = true)]
    AddView {
        /// Host group.
        #[arg(short = 'h', value_name = "HG")]
        host_group: Option<String>,
        /// Target group.
        #[arg(short = 't', value_name = "TG")]
        target_group: Option<String>,
        /// LUN (0-16383).
        #[arg(short = 'n', value_name = "LUN")]
        lun: Option<u16>,
        /// LU GUID.
        guid: Guid,
        /// Print help.
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
    },
    /// Remove view entries of an LU.
    RemoveView {
        /// Remove every entry.
        #[arg(short = 'a')]
        all: bool,
        /// LU GUID.
        #[arg(short = 'l', value_name = "GUID")]
        guid: Guid,
        /// Entry numbers.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        entries: Vec<u32>,
    },
    /// List view entries of an LU.
    ListView {
        /// LU GUID.
        #[arg(short = 'l', value_name = "GUID")]
        guid: Guid,
        /// Entry numbers (all when none).
        entries: Vec<u32>,
    },
    /// Create an LU (sbd: a file, block device or RAM).
    CreateLu(CreateLuArgs),
    /// Change an LU's properties or grow it.
    ModifyLu(ModifyLuArgs),
    /// Delete an LU (its data and metadata are kept); -k keeps its view entries.
    DeleteLu(DeleteLuArgs),
    /// Bring back an LU deleted with its data kept, from its data or metadata file.
    ImportLu(ImportLuArgs),
    /// List LUs.
    ListLu {
        /// Verbose.
        #[arg(short)]
        verbose: bool,
        /// LU GUIDs (all when none).
        guids: Vec<Guid>,
    },
    /// Bring an LU online.
    OnlineLu {
        /// LU GUID.
        guid: Guid,
    },
    /// Take an LU offline.
    OfflineLu {
        /// LU GUID.
        guid: Guid,
    },
    /// List targets (local ports).
    ListTarget(ListNames),
    /// Bring a target online.
    OnlineTarget {
        /// Target name.
        name: String,
    },
    /// Take a target offline.
    OfflineTarget {
        /// Target name.
        name: String,
    },
}

#[derive(clap::Args, Debug)]
struct Members {
    /// Group name.
    #[arg(short = 'g', value_name = "GROUP")]
    group: String,
    /// Member names.
    #[arg(required = true)]
    members: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct ListNames {
    /// Verbose.
    #[arg(short)]
    verbose: bool,
    /// Names (all when none).
    names: Vec<String>,
}

fn parse_json(s: &str) -> Result<Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not valid JSON: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => cli::fail(PROG, format!("{e:#}")),
    }
}

fn names(v: Vec<String>) -> NamesArgs {
    NamesArgs {
        names: (!v.is_empty()).then_some(v),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let json = cli.global.json;
    let mut c = Client::connect(&cli.global.socket)?;
    // Listing commands print and return here; the others fall through to a common call that
    // prints nothing on success (the result with --json), as COMSTAR's stmfadm does.
    let (cmd, args): (&str, Value) = match cli.cmd {
        Cmd::ListState => {
            let v = c.call("list-state", &NoArgs {})?;
            return show(json, v, |s: StateInfo| {
                print_fields(
                    0,
                    &[
                        ("Operational Status".into(), s.operational),
                        ("Config Status".into(), s.config),
                        ("Providers".into(), s.providers.to_string()),
                        ("LUs".into(), s.lus.to_string()),
                        ("Targets".into(), s.targets.to_string()),
                        ("Sessions".into(), s.sessions.to_string()),
                        (
                            "Version".into(),
                            format!("{} (ABI {})", s.version, s.abi_version),
                        ),
                    ],
                )
            });
        }
        Cmd::ListProvider { verbose } => {
            let v = c.call("list-provider", &NoArgs {})?;
            return show(json, v, |list: Vec<ProviderInfo>| {
                list.into_iter().for_each(|p| print_provider(p, verbose))
            });
        }
        Cmd::ListHg(l) => {
            let v = c.call("list-hg", &names(l.names))?;
            return show(json, v, |g: Vec<GroupInfo>| {
                print_groups("Host Group", g, l.verbose)
            });
        }
        Cmd::ListTg(l) => {
            let v = c.call("list-tg", &names(l.names))?;
            return show(json, v, |g: Vec<GroupInfo>| {
                print_groups("Target Group", g, l.verbose)
            });
        }
        Cmd::ListView { guid, entries } => {
            let entries = (!entries.is_empty()).then_some(entries);
            let v = c.call("list-view", &ListViewArgs { guid, entries })?;
            return show(json, v, |list: Vec<ViewEntry>| {
                list.into_iter().for_each(print_view)
            });
        }
        Cmd::ListLu { verbose, guids } => {
            let guids = (!guids.is_empty()).then_some(guids);
            let v = c.call("list-lu", &GuidsArgs { guids })?;
            return show(json, v, |list: Vec<LuInfo>| {
                list.into_iter().for_each(|l| print_lu(l, verbose))
            });
        }
        Cmd::ListTarget(l) => {
            let v = c.call("list-target", &names(l.names))?;
            return show(json, v, |list: Vec<LportInfo>| {
                list.into_iter().for_each(|t| print_target(t, l.verbose))
            });
        }
        Cmd::CreateLu(a) => {
            let r = lu::create_lu(&mut c, &a)?;
            return lu_done(json, &r.reply, || {
                println!("Logical unit created: {}", r.guid)
            });
        }
        Cmd::ImportLu(a) => {
            let r = lu::import_lu(&mut c, &a)?;
            return lu_done(json, &r.reply, || {
                println!("Logical unit imported: {}", r.guid)
            });
        }
        Cmd::ModifyLu(a) => {
            let r = lu::modify_lu(&mut c, &a)?;
            return lu_done(json, &r.reply, || {});
        }
        Cmd::DeleteLu(a) => {
            let r = lu::delete_lu(&mut c, &a)?;
            return lu_done(json, &r.reply, || {});
        }
        Cmd::ProviderControl { provider, request } => {
            // The provider's reply is JSON already: print it in both modes.
            let v = c.call(
                "provider-control",
                &ProviderControlArgs { provider, request },
            )?;
            cli::print_json(&v);
            return Ok(());
        }
        Cmd::LoadProvider { path } => {
            let path = std::path::absolute(&path).with_context(|| format!("{}", path.display()))?;
            (
                "load-provider",
                to_args(PathArgs {
                    path: path.to_string_lossy().into_owned(),
                }),
            )
        }
        Cmd::UnloadProvider { name } => ("unload-provider", to_args(NameArgs { name })),
        Cmd::CreateHg { name } => ("create-hg", to_args(NameArgs { name })),
        Cmd::DeleteHg { name } => ("delete-hg", to_args(NameArgs { name })),
        Cmd::AddHgMember(m) => (
            "add-hg-member",
            to_args(MembersArgs {
                group: m.group,
                members: m.members,
            }),
        ),
        Cmd::RemoveHgMember(m) => (
            "remove-hg-member",
            to_args(MembersArgs {
                group: m.group,
                members: m.members,
            }),
        ),
        Cmd::CreateTg { name } => ("create-tg", to_args(NameArgs { name })),
        Cmd::DeleteTg { name } => ("delete-tg", to_args(NameArgs { name })),
        Cmd::AddTgMember(m) => (
            "add-tg-member",
            to_args(MembersArgs {
                group: m.group,
                members: m.members,
            }),
        ),
        Cmd::RemoveTgMember(m) => (
            "remove-tg-member",
            to_args(MembersArgs {
                group: m.group,
                members: m.members,
            }),
        ),
        Cmd::AddView {
            host_group,
            target_group,
            lun,
            guid,
            ..
        } => (
            "add-view",
            to_args(AddViewArgs {
                guid,
                host_group,
                target_group,
                lun,
            }),
        ),
        Cmd::RemoveView { all, guid, entries } => {
            let entries = (!entries.is_empty()).then_some(entries);
            (
                "remove-view",
                to_args(RemoveViewArgs { guid, entries, all }),
            )
        }
        Cmd::OnlineLu { guid } => ("online-lu", to_args(GuidArgs { guid })),
        Cmd::OfflineLu { guid } => ("offline-lu", to_args(GuidArgs { guid })),
        Cmd::OnlineTarget { name } => ("online-target", to_args(NameArgs { name })),
        Cmd::OfflineTarget { name } => ("offline-target", to_args(NameArgs { name })),
    };
    let v = c.call(cmd, &args)?;
    if json {
        cli::print_json(&v);
    }
    Ok(())
}

/// Prints a provider's reply with --json, else what `human` prints.
fn lu_done(json: bool, reply: &Value, human: impl FnOnce()) -> anyhow::Result<()> {
    if json {
        cli::print_json(reply);
    } else {
        human();
    }
    Ok(())
}

fn to_args<T: serde::Serialize>(a: T) -> Value {
    // The argument structs are plain data: encoding cannot fail.
    serde_json::to_value(a).unwrap_or(Value::Null)
}

/// Prints `v` as JSON, or decodes it as `T` and prints it for humans.
fn show<T: serde::de::DeserializeOwned>(
    json: bool,
    v: Value,
    human: impl FnOnce(T),
) -> anyhow::Result<()> {
    if json {
        cli::print_json(&v);
    } else {
        human(serde_json::from_value(v).context("unexpected reply from stmfd")?);
    }
    Ok(())
}

fn fields(list: &[(&str, String)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn failed_suffix(failed: &Option<String>) -> String {
    failed
        .as_ref()
        .map(|f| format!(" (failed: {f})"))
        .unwrap_or_default()
}

fn print_provider(p: ProviderInfo, verbose: bool) {
    println!("Provider: {}", p.name);
    if verbose {
        let status = match &p.failed {
            Some(f) => f.clone(),
            None => "ok".into(),
        };
        print_fields(
            4,
            &fields(&[
                ("Type", p.kind),
                ("Version", p.version),
                ("Description", p.description),
                ("Path", p.path),
                ("ABI Version", p.abi_version.to_string()),
                ("Objects", p.objects.to_string()),
                ("Status", status),
            ]),
        );
    }
}

fn print_groups(what: &str, groups: Vec<GroupInfo>, verbose: bool) {
    for g in groups {
        println!("{what}: {}", g.name);
        if verbose {
            for m in g.members {
                println!("        Member: {m}");
            }
        }
    }
}

fn print_view(v: ViewEntry) {
    println!("View Entry: {}", v.index);
    print_fields(
        4,
        &fields(&[
            ("Host group", v.host_group.unwrap_or_else(|| "All".into())),
            (
                "Target group",
                v.target_group.unwrap_or_else(|| "All".into()),
            ),
            ("LUN", v.lun.to_string()),
        ]),
    );
}

fn print_lu(l: LuInfo, verbose: bool) {
    println!("LU Name: {}", l.guid);
    if !verbose {
        return;
    }
    let mut f = fields(&[
        (
            "Operational Status",
            format!("{}{}", state_label(l.state), failed_suffix(&l.failed)),
        ),
        ("Provider Name", l.provider.clone()),
        ("Alias", lu::alias_of(&l)),
        ("View Entry Count", l.views.to_string()),
    ]);
    f.extend(lu::detail_fields(&l.details));
    print_fields(4, &f);
}

fn print_target(t: LportInfo, verbose: bool) {
    println!("Target: {}", t.name);
    if !verbose {
        return;
    }
    print_fields(
        4,
        &fields(&[
            (
                "Operational Status",
                format!("{}{}", state_label(t.state), failed_suffix(&t.failed)),
            ),
            ("Provider Name", t.provider),
            (
                "Alias",
                if t.alias.is_empty() {
                    "-".into()
                } else {
                    t.alias
                },
            ),
            ("Protocol", t.protocol),
            ("Sessions", t.sessions.len().to_string()),
        ]),
    );
    for s in t.sessions {
        println!("        Initiator: {}", s.initiator);
        let luns: Vec<String> = s.luns.iter().map(u16::to_string).collect();
        let mut f = vec![
            (
                "Alias",
                if s.alias.is_empty() {
                    "-".into()
                } else {
                    s.alias
                },
            ),
            ("LUNs", luns.join(", ")),
        ];
        if s.name_unproven {
            f.push(("Name Proven", "No (views for all hosts only)".to_string()));
        }
        print_fields(12, &fields(&f));
    }
}
