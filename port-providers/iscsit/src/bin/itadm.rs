//! itadm: manage iSCSI targets, target portal groups, initiator contexts and defaults (a thin
//! client of stmfd, like COMSTAR's itadm).
//!
//! Every subcommand is one request to the iscsit provider through the daemon's
//! `provider-control`. CHAP secrets are read from a file (`-S FILE`) or a prompt (`-s`: no
//! echo on a terminal, one line of standard input otherwise); they never appear on the
//! command line, in the output or in an error message.

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Map, Value};
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use stmf::cli::{self, Client, GlobalOpts};

const PROG: &str = "itadm";
const PROVIDER: &str = "iscsit";

/// Manage the iSCSI target port provider (iscsit) of stmfd: targets, target portal groups,
/// initiator contexts and defaults.
#[derive(Parser, Debug)]
#[command(name = "itadm", version)]
struct Cli {
    #[command(flatten)]
    global: GlobalOpts,
    #[command(subcommand)]
    cmd: Cmd,
}

// The names are the subcommands', as COMSTAR spells them.
#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a target node (an IQN is made up when -n is not given).
    CreateTarget {
        #[command(flatten)]
        props: TargetProps,
        /// The target's iSCSI name (iqn. or eui.).
        #[arg(short = 'n', long = "name", value_name = "NAME")]
        name: Option<String>,
    },
    /// Change a target's properties.
    ModifyTarget {
        #[command(flatten)]
        props: TargetProps,
        /// Remove the target's CHAP secret.
        #[arg(long, conflicts_with_all = ["secret_prompt", "secret_file"])]
        clear_secret: bool,
        /// Target name.
        name: String,
    },
    /// Delete a target (-f logs its initiators out first).
    DeleteTarget {
        /// Delete even if initiators are logged in.
        #[arg(short, long)]
        force: bool,
        /// Target name.
        name: String,
    },
    /// List targets: name, state, sessions (-v: alias, auth, CHAP, portal groups).
    ListTarget {
        /// Verbose.
        #[arg(short, long)]
        verbose: bool,
        /// Target name (all when absent).
        name: Option<String>,
    },
    /// Create a target portal group of one or more portals, ip[:port] or [ipv6][:port].
    CreateTpg {
        /// Group name.
        name: String,
        /// Portals (port 3260 when absent; port 0 picks a free one).
        #[arg(required = true, value_name = "PORTAL")]
        portals: Vec<String>,
    },
    /// Delete a target portal group (-f when targets use it).
    DeleteTpg {
        /// Delete even if targets use the group.
        #[arg(short, long)]
        force: bool,
        /// Group name.
        name: String,
    },
    /// List target portal groups (-v: portals and targets).
    ListTpg {
        /// Verbose.
        #[arg(short, long)]
        verbose: bool,
        /// Group name (all when absent).
        name: Option<String>,
    },
    /// Create an initiator context (the CHAP account of one initiator).
    CreateInitiator {
        #[command(flatten)]
        chap: InitiatorChap,
        /// Initiator name.
        name: String,
    },
    /// Change an initiator context.
    ModifyInitiator {
        #[command(flatten)]
        chap: InitiatorChap,
        /// Remove the initiator's CHAP secret.
        #[arg(long, conflicts_with_all = ["secret_prompt", "secret_file"])]
        clear_secret: bool,
        /// Initiator name.
        name: String,
    },
    /// Delete an initiator context.
    DeleteInitiator {
        /// Initiator name.
        name: String,
    },
    /// List initiator contexts.
    ListInitiator {
        /// Verbose.
        #[arg(short, long)]
        verbose: bool,
        /// Initiator name (all when absent).
        name: Option<String>,
    },
    /// Change the global defaults.
    ModifyDefaults {
        /// Authentication of targets with auth "default" (and of discovery sessions while
        /// --discovery-auth is "default").
        #[arg(short = 'a', long = "auth-method", value_parser = ["none", "chap"])]
        auth: Option<String>,
        /// Authentication of discovery sessions ("default": as --auth-method). With chap,
        /// initiators authenticate with their own context or the discovery account.
        #[arg(long = "discovery-auth", value_parser = ["none", "chap", "default"])]
        discovery_auth: Option<String>,
        /// CHAP user of the discovery account (default "discovery").
        #[arg(long = "discovery-chap-user", value_name = "USER")]
        discovery_chap_user: Option<String>,
        /// Read the discovery account's secret from a prompt (standard input when not a
        /// terminal). The account proves no initiator name.
        #[arg(long = "discovery-chap-secret", id = "discovery_secret_prompt")]
        discovery_secret_prompt: bool,
        /// Read the discovery account's secret from the first line of FILE.
        #[arg(
            long = "discovery-chap-secret-file",
            id = "discovery_secret_file",
            value_name = "FILE",
            conflicts_with = "discovery_secret_prompt"
        )]
        discovery_secret_file: Option<PathBuf>,
        /// Remove the discovery account.
        #[arg(long, conflicts_with_all = ["discovery_secret_prompt", "discovery_secret_file"])]
        clear_discovery_secret: bool,
        /// Alias of targets that have none ("none" clears it).
        #[arg(short = 'l', long = "alias", short_alias = 'd', value_name = "ALIAS")]
        alias: Option<String>,
        /// Portals of the default portal group (tag 1), which serves the targets bound to
        /// no group, comma separated (port 0 picks a free port).
        #[arg(long = "portals", value_name = "PORTAL,...", value_delimiter = ',')]
        portals: Option<Vec<String>>,
        /// Digests required of targets that do not say (CRC32C).
        #[arg(long = "digest", value_parser = ["none", "header", "data", "both"])]
        digest: Option<String>,
        /// Idle seconds before a keepalive NOP-In (0: no keepalive).
        #[arg(long = "nop-interval", value_name = "SECONDS", value_parser = parse_seconds)]
        nop_interval: Option<u64>,
        /// Seconds a keepalive NOP-In may stay unanswered before the connection is dropped.
        #[arg(long = "nop-timeout", value_name = "SECONDS", value_parser = parse_seconds)]
        nop_timeout: Option<u64>,
        /// A resource limit (docs/security.md), e.g. session_buffer_memory=64m or
        /// send_timeout_ms=30000; sizes take k/m/g suffixes. Repeatable.
        #[arg(long = "limit", value_name = "NAME=VALUE", value_parser = parse_limit)]
        limit: Vec<(String, u64)>,
    },
    /// Show the global defaults.
    ListDefaults,
    /// Show what the resource limits hold now: buffer memory (all sessions and each),
    /// connections open and in login, connections refused by reason.
    ListResources,
    /// Failed CHAP logins: totals, and per source (address or IPv6 /64) the failures
    /// and whether its logins are refused now, and for how long.
    ListAuthStats,
}

/// Options of create-target and modify-target.
#[derive(Args, Debug)]
struct TargetProps {
    /// Authentication method.
    #[arg(short = 'a', long = "auth-method", value_parser = ["none", "chap", "default"])]
    auth: Option<String>,
    /// TargetAlias ("none" clears it).
    #[arg(short = 'l', long = "alias", value_name = "ALIAS")]
    alias: Option<String>,
    /// Target portal groups, comma separated ("default": the default portal group).
    #[arg(
        short = 't',
        long = "tpg",
        value_name = "TPG,...",
        value_delimiter = ','
    )]
    tpgs: Option<Vec<String>>,
    /// Read the target's CHAP secret from a prompt (standard input when not a terminal).
    #[arg(short = 's', long = "chap-secret", id = "secret_prompt")]
    secret_prompt: bool,
    /// Read the target's CHAP secret from the first line of FILE.
    #[arg(
        short = 'S',
        long = "chap-secret-file",
        id = "secret_file",
        value_name = "FILE",
        conflicts_with = "secret_prompt"
    )]
    secret_file: Option<PathBuf>,
    /// CHAP user name initiators use with the target's secret ("none": the target name).
    #[arg(short = 'u', long = "chap-user", value_name = "USER")]
    chap_user: Option<String>,
    /// The target's own CHAP user for mutual CHAP (default: the target name).
    #[arg(long = "mutual-chap-user", value_name = "USER")]
    mutual_user: Option<String>,
    /// Read the target's own (mutual CHAP) secret from the first line of FILE ("none"
    /// removes it).
    #[arg(long = "mutual-chap-secret-file", value_name = "FILE")]
    mutual_secret_file: Option<PathBuf>,
    /// Initiators allowed to see and log in to the target, comma separated ("none":
    /// every initiator).
    #[arg(long = "acl", value_name = "INITIATOR,...", value_delimiter = ',')]
    acl: Option<Vec<String>>,
    /// Digests the target requires (CRC32C; "default": the defaults').
    #[arg(long = "digest", value_parser = ["none", "header", "data", "both", "default"])]
    digest: Option<String>,
    /// Idle seconds before a keepalive NOP-In (0: none; "default": the defaults').
    #[arg(long = "nop-interval", value_name = "SECONDS|default", value_parser = parse_tunable)]
    nop_interval: Option<Tunable>,
    /// Seconds a keepalive NOP-In may stay unanswered ("default": the defaults').
    #[arg(long = "nop-timeout", value_name = "SECONDS|default", value_parser = parse_tunable)]
    nop_timeout: Option<Tunable>,
}

/// Milliseconds from seconds (`10`, `0.5`).
fn parse_seconds(s: &str) -> Result<u64, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("{s:?}: expected 0 to 86400 seconds"));
    }
    Ok((secs * 1000.0).round() as u64)
}

/// `name=value` of `--limit`: a size (k/m/g suffixes) or a plain number.
fn parse_limit(s: &str) -> Result<(String, u64), String> {
    let (k, v) = cli::lu::parse_prop(s)?;
    Ok((k, cli::lu::parse_size(&v)?))
}

/// A per-target setting: a value or back to the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tunable {
    Default,
    Ms(u64),
}

impl Tunable {
    fn json(self) -> Value {
        match self {
            Tunable::Default => Value::Null,
            Tunable::Ms(ms) => json!(ms),
        }
    }
}

fn parse_tunable(s: &str) -> Result<Tunable, String> {
    if s.eq_ignore_ascii_case("default") {
        Ok(Tunable::Default)
    } else {
        parse_seconds(s).map(Tunable::Ms)
    }
}

/// CHAP options of create-initiator and modify-initiator.
#[derive(Args, Debug)]
struct InitiatorChap {
    /// Read the initiator's CHAP secret from a prompt (standard input when not a terminal).
    #[arg(short = 's', long = "chap-secret", id = "secret_prompt")]
    secret_prompt: bool,
    /// Read the initiator's CHAP secret from the first line of FILE.
    #[arg(
        short = 'S',
        long = "chap-secret-file",
        id = "secret_file",
        value_name = "FILE",
        conflicts_with = "secret_prompt"
    )]
    secret_file: Option<PathBuf>,
    /// CHAP user name the initiator sends ("none": its iSCSI name).
    #[arg(short = 'u', long = "chap-user", value_name = "USER")]
    chap_user: Option<String>,
}

/// Why a secret could not be read. Never carries the secret.
#[derive(Debug, thiserror::Error)]
enum SecretError {
    #[error("cannot read the CHAP secret from {}: {error}", path.display())]
    File { path: PathBuf, error: io::Error },
    #[error("cannot read the CHAP secret: {0}")]
    Prompt(io::Error),
    #[error("the CHAP secret is empty")]
    Empty,
    #[error("the CHAP secret is not UTF-8")]
    NotUtf8,
    #[error("the secrets entered do not match")]
    Mismatch,
}

/// A secret read from a file or a prompt; its bytes are overwritten when dropped.
struct SecretText(String);

impl Drop for SecretText {
    fn drop(&mut self) {
        // SAFETY: zero bytes are valid UTF-8.
        for b in unsafe { self.0.as_bytes_mut() } {
            // Volatile so that the wipe is not optimised away.
            // SAFETY: `b` is a valid, aligned, exclusive reference.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// The first line of `bytes` without its line end.
fn first_line(bytes: Vec<u8>) -> Result<SecretText, SecretError> {
    let mut s = SecretText(String::from_utf8(bytes).map_err(|_| SecretError::NotUtf8)?);
    if let Some(n) = s.0.find('\n') {
        s.0.truncate(n);
    }
    if s.0.ends_with('\r') {
        s.0.pop();
    }
    if s.0.is_empty() {
        return Err(SecretError::Empty);
    }
    Ok(s)
}

fn secret_from_file(path: &Path) -> Result<SecretText, SecretError> {
    let bytes = std::fs::read(path).map_err(|error| SecretError::File {
        path: path.to_owned(),
        error,
    })?;
    first_line(bytes)
}

/// Turns terminal echo off until dropped.
struct NoEcho {
    fd: i32,
    saved: libc::termios,
}

impl NoEcho {
    fn new(fd: i32) -> io::Result<NoEcho> {
        // SAFETY: termios is plain data; tcgetattr fills it for a valid descriptor.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `t` is a valid termios to write into.
        if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let saved = t;
        t.c_lflag &= !(libc::ECHO | libc::ECHONL);
        t.c_lflag |= libc::ICANON;
        // SAFETY: `t` is a valid termios.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(NoEcho { fd, saved })
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `new` on the same descriptor.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

fn read_line(stdin: &mut impl BufRead) -> Result<SecretText, SecretError> {
    let mut buf = Vec::new();
    stdin
        .read_until(b'\n', &mut buf)
        .map_err(SecretError::Prompt)?;
    first_line(buf)
}

/// A secret from the terminal (asked twice, no echo) or one line of a non-terminal stdin.
fn secret_from_prompt() -> Result<SecretText, SecretError> {
    let stdin = io::stdin();
    if !stdin.is_terminal() {
        return read_line(&mut stdin.lock());
    }
    let ask = |prompt: &str| -> Result<SecretText, SecretError> {
        let mut err = io::stderr();
        let _ = write!(err, "{prompt}");
        let _ = err.flush();
        let r = {
            let _quiet = NoEcho::new(libc::STDIN_FILENO).map_err(SecretError::Prompt)?;
            read_line(&mut stdin.lock())
        };
        let _ = writeln!(err);
        r
    };
    let a = ask("Enter CHAP secret: ")?;
    let b = ask("Re-enter secret: ")?;
    if a.0 != b.0 {
        return Err(SecretError::Mismatch);
    }
    Ok(a)
}

/// The secret the options ask for, if any.
fn read_secret(prompt: bool, file: Option<&Path>) -> Result<Option<SecretText>, SecretError> {
    match (prompt, file) {
        (true, _) => secret_from_prompt().map(Some),
        (false, Some(p)) => secret_from_file(p).map(Some),
        (false, None) => Ok(None),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => cli::fail(PROG, format!("{e:#}")),
    }
}

/// Inserts `v` under `k` when present.
fn put(m: &mut Map<String, Value>, k: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(k.to_owned(), v);
    }
}

/// `none` as an empty list (every initiator).
fn acl_value(acl: &[String]) -> Value {
    if acl.len() == 1 && acl[0].eq_ignore_ascii_case("none") {
        json!([])
    } else {
        json!(acl)
    }
}

/// The request members of `p`, secrets read.
fn target_request(op: &str, p: &TargetProps) -> anyhow::Result<Map<String, Value>> {
    let mut m = Map::new();
    m.insert("op".into(), json!(op));
    put(&mut m, "auth", p.auth.as_ref().map(|a| json!(a)));
    put(&mut m, "alias", p.alias.as_ref().map(|a| json!(a)));
    put(&mut m, "tpgs", p.tpgs.as_ref().map(|t| json!(t)));
    put(&mut m, "chap_user", p.chap_user.as_ref().map(|u| json!(u)));
    put(
        &mut m,
        "mutual_chap_user",
        p.mutual_user.as_ref().map(|u| json!(u)),
    );
    put(&mut m, "acl", p.acl.as_deref().map(acl_value));
    put(&mut m, "digests", p.digest.as_ref().map(|d| json!(d)));
    put(&mut m, "nop_interval_ms", p.nop_interval.map(Tunable::json));
    put(&mut m, "nop_timeout_ms", p.nop_timeout.map(Tunable::json));
    if let Some(s) = read_secret(p.secret_prompt, p.secret_file.as_deref())? {
        m.insert("chap_secret".into(), json!(s.0));
    }
    if let Some(f) = &p.mutual_secret_file {
        if f.as_os_str() == "none" {
            m.insert("mutual_chap_secret".into(), json!("none"));
        } else {
            let s = secret_from_file(f)?;
            m.insert("mutual_chap_secret".into(), json!(s.0));
        }
    }
    Ok(m)
}

fn initiator_request(
    op: &str,
    name: &str,
    c: &InitiatorChap,
    clear: bool,
) -> anyhow::Result<Map<String, Value>> {
    let mut m = Map::new();
    m.insert("op".into(), json!(op));
    m.insert("name".into(), json!(name));
    put(&mut m, "chap_user", c.chap_user.as_ref().map(|u| json!(u)));
    if let Some(s) = read_secret(c.secret_prompt, c.secret_file.as_deref())? {
        m.insert("chap_secret".into(), json!(s.0));
    } else if clear {
        m.insert("chap_secret".into(), json!("none"));
    }
    Ok(m)
}

fn control(c: &mut Client, req: Map<String, Value>) -> anyhow::Result<Value> {
    Ok(stmf::cli::lu::provider_control(
        c,
        PROVIDER,
        Value::Object(req),
    )?)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let json = cli.global.json;
    // Secrets are read before connecting, so a prompt never holds a daemon connection.
    let (req, show): (Map<String, Value>, Show) = match &cli.cmd {
        Cmd::CreateTarget { props, name } => {
            let mut m = target_request("create-target", props)?;
            put(&mut m, "name", name.as_ref().map(|n| json!(n)));
            (m, Show::Created("Target"))
        }
        Cmd::ModifyTarget {
            props,
            clear_secret,
            name,
        } => {
            let mut m = target_request("modify-target", props)?;
            m.insert("name".into(), json!(name));
            if *clear_secret {
                m.insert("chap_secret".into(), json!("none"));
            }
            (m, Show::Nothing)
        }
        Cmd::DeleteTarget { force, name } => (
            obj(json!({"op": "delete-target", "name": name, "force": force})),
            Show::Nothing,
        ),
        Cmd::ListTarget { verbose, name } => {
            let mut m = obj(json!({"op": "list-target", "verbose": verbose}));
            put(&mut m, "name", name.as_ref().map(|n| json!(n)));
            (m, Show::Targets(*verbose))
        }
        Cmd::CreateTpg { name, portals } => (
            obj(json!({"op": "create-tpg", "name": name, "portals": portals})),
            Show::Nothing,
        ),
        Cmd::DeleteTpg { force, name } => (
            obj(json!({"op": "delete-tpg", "name": name, "force": force})),
            Show::Nothing,
        ),
        Cmd::ListTpg { verbose, name } => {
            let mut m = obj(json!({"op": "list-tpg"}));
            put(&mut m, "name", name.as_ref().map(|n| json!(n)));
            (m, Show::Tpgs(*verbose))
        }
        Cmd::CreateInitiator { chap, name } => (
            initiator_request("create-initiator", name, chap, false)?,
            Show::Nothing,
        ),
        Cmd::ModifyInitiator {
            chap,
            clear_secret,
            name,
        } => (
            initiator_request("modify-initiator", name, chap, *clear_secret)?,
            Show::Nothing,
        ),
        Cmd::DeleteInitiator { name } => (
            obj(json!({"op": "delete-initiator", "name": name})),
            Show::Nothing,
        ),
        Cmd::ListInitiator { verbose, name } => {
            let mut m = obj(json!({"op": "list-initiator"}));
            put(&mut m, "name", name.as_ref().map(|n| json!(n)));
            (m, Show::Initiators(*verbose))
        }
        Cmd::ModifyDefaults {
            auth,
            discovery_auth,
            discovery_chap_user,
            discovery_secret_prompt,
            discovery_secret_file,
            clear_discovery_secret,
            alias,
            portals,
            digest,
            nop_interval,
            nop_timeout,
            limit,
        } => {
            let mut m = obj(json!({"op": "modify-defaults"}));
            if !limit.is_empty() {
                let l: Map<String, Value> =
                    limit.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                m.insert("limits".into(), Value::Object(l));
            }
            put(&mut m, "auth", auth.as_ref().map(|a| json!(a)));
            put(
                &mut m,
                "discovery_auth",
                discovery_auth.as_ref().map(|a| json!(a)),
            );
            put(
                &mut m,
                "discovery_chap_user",
                discovery_chap_user.as_ref().map(|u| json!(u)),
            );
            if let Some(s) =
                read_secret(*discovery_secret_prompt, discovery_secret_file.as_deref())?
            {
                m.insert("discovery_chap_secret".into(), json!(s.0));
            } else if *clear_discovery_secret {
                m.insert("discovery_chap_secret".into(), json!("none"));
            }
            put(&mut m, "alias", alias.as_ref().map(|a| json!(a)));
            put(&mut m, "portals", portals.as_ref().map(|p| json!(p)));
            put(&mut m, "digests", digest.as_ref().map(|d| json!(d)));
            put(&mut m, "nop_interval_ms", nop_interval.map(|v| json!(v)));
            put(&mut m, "nop_timeout_ms", nop_timeout.map(|v| json!(v)));
            (m, Show::Nothing)
        }
        Cmd::ListDefaults => (obj(json!({"op": "list-defaults"})), Show::Defaults),
        Cmd::ListResources => (obj(json!({"op": "list-resources"})), Show::Resources),
        Cmd::ListAuthStats => (obj(json!({"op": "list-auth-stats"})), Show::AuthStats),
    };
    let mut c = Client::connect(&cli.global.socket)?;
    let reply = control(&mut c, req)?;
    if json {
        cli::print_json(&reply);
        return Ok(());
    }
    match show {
        Show::Nothing => {}
        Show::Created(what) => {
            let name = reply.get("name").map(cli::value_label).unwrap_or_default();
            println!("{what} {name} successfully created");
        }
        Show::Targets(v) => print_targets(&reply, v),
        Show::Tpgs(v) => print_tpgs(&reply, v),
        Show::Initiators(v) => print_initiators(&reply, v),
        Show::Defaults => print_defaults(&reply),
        Show::Resources => print_resources(&reply),
        Show::AuthStats => print_auth_stats(&reply),
    }
    Ok(())
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// What to print for a successful reply (without `--json`).
enum Show {
    Nothing,
    Created(&'static str),
    Targets(bool),
    Tpgs(bool),
    Initiators(bool),
    Defaults,
    Resources,
    AuthStats,
}

/// Width of the name column: the longest `name`, at least 48 (an IQN's usual length).
fn name_width(items: &[Value]) -> usize {
    items
        .iter()
        .map(|i| label(i.get("name")).len())
        .max()
        .unwrap_or(0)
        .max(48)
}

fn list<'a>(reply: &'a Value, key: &str) -> &'a [Value] {
    reply
        .get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn label(v: Option<&Value>) -> String {
    v.map_or_else(|| "-".into(), cli::value_label)
}

fn set_or_unset(v: Option<&Value>) -> &'static str {
    if v.and_then(Value::as_bool) == Some(true) {
        "set"
    } else {
        "unset"
    }
}

/// `label:` lines indented by 8 with values in one column (COMSTAR's verbose lists).
fn print_props(props: &[(&str, String)]) {
    for (k, v) in props {
        let k = format!("{k}:");
        println!("        {k:<24}{v}");
    }
}

fn print_targets(reply: &Value, verbose: bool) {
    let ts = list(reply, "targets");
    let w = name_width(ts);
    println!("{:<w$}  {:<8} SESSIONS", "TARGET NAME", "STATE");
    for t in ts {
        println!(
            "{:<w$}  {:<8} {}",
            label(t.get("name")),
            label(t.get("state")),
            label(t.get("sessions"))
        );
        if !verbose {
            continue;
        }
        let auth = label(t.get("auth"));
        let auth = match (auth.as_str(), t.get("effective_auth")) {
            ("default", Some(e)) => format!("{} (defaults)", cli::value_label(e)),
            _ => auth,
        };
        let tpgs = list(t, "tpgs");
        let tags = if tpgs.is_empty() {
            "default".to_string()
        } else {
            tpgs.iter()
                .map(|g| format!("{} = {}", label(g.get("name")), label(g.get("tag"))))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut p = vec![
            ("alias", label(t.get("alias"))),
            ("auth", auth),
            ("targetchapuser", label(t.get("chap_user"))),
            (
                "targetchapsecret",
                set_or_unset(t.get("chap_secret_set")).into(),
            ),
            ("mutualchapuser", label(t.get("mutual_chap_user"))),
            (
                "mutualchapsecret",
                set_or_unset(t.get("mutual_chap_secret_set")).into(),
            ),
            ("tpg-tags", tags),
        ];
        let portals: Vec<String> = list(t, "portals").iter().map(cli::value_label).collect();
        p.push((
            "portals",
            if portals.is_empty() {
                "-".into()
            } else {
                portals.join(",")
            },
        ));
        let digests = label(t.get("digests"));
        p.push((
            "digest",
            match (digests.as_str(), t.get("effective_digests")) {
                ("default", Some(e)) => format!("{} (defaults)", cli::value_label(e)),
                _ => digests,
            },
        ));
        p.push((
            "nop-interval",
            tunable_label(t.get("nop_interval_ms"), t.get("effective_nop_interval_ms")),
        ));
        p.push((
            "nop-timeout",
            tunable_label(t.get("nop_timeout_ms"), t.get("effective_nop_timeout_ms")),
        ));
        let acl: Vec<String> = list(t, "acl").iter().map(cli::value_label).collect();
        p.push((
            "acl",
            if acl.is_empty() {
                "all initiators".into()
            } else {
                acl.join(",")
            },
        ));
        print_props(&p);
        for s in list(t, "session_list") {
            let conns: Vec<String> = list(s, "connections")
                .iter()
                .map(|c| label(c.get("peer")))
                .collect();
            print_props(&[(
                "session",
                format!(
                    "{} isid {} tsih {} from {} (name {})",
                    label(s.get("initiator")),
                    label(s.get("isid")),
                    label(s.get("tsih")),
                    conns.join(","),
                    label(s.get("identity"))
                ),
            )]);
        }
    }
}

/// Milliseconds as seconds (`10s`, `0.3s`).
fn seconds(ms: Option<&Value>) -> String {
    match ms.and_then(Value::as_u64) {
        Some(ms) if ms % 1000 == 0 => format!("{}s", ms / 1000),
        Some(ms) => format!("{}s", ms as f64 / 1000.0),
        None => "-".into(),
    }
}

/// A per-target setting: its own value, or the default's marked "(defaults)".
fn tunable_label(own: Option<&Value>, effective: Option<&Value>) -> String {
    match own {
        Some(v) if !v.is_null() => seconds(Some(v)),
        _ => format!("{} (defaults)", seconds(effective)),
    }
}

fn print_tpgs(reply: &Value, verbose: bool) {
    let gs = list(reply, "tpgs");
    let w = gs
        .iter()
        .map(|g| label(g.get("name")).len())
        .max()
        .unwrap_or(0)
        .max(28);
    println!("{:<w$}  PORTAL COUNT", "TARGET PORTAL GROUP");
    for g in gs {
        let portals: Vec<String> = list(g, "portals").iter().map(cli::value_label).collect();
        println!("{:<w$}  {}", label(g.get("name")), portals.len());
        if verbose {
            let targets: Vec<String> = list(g, "targets").iter().map(cli::value_label).collect();
            print_props(&[
                ("tag", label(g.get("tag"))),
                ("portals", portals.join(",")),
                (
                    "targets",
                    if targets.is_empty() {
                        "-".into()
                    } else {
                        targets.join(",")
                    },
                ),
            ]);
        }
    }
}

fn print_initiators(reply: &Value, verbose: bool) {
    let is = list(reply, "initiators");
    let w = name_width(is);
    println!("{:<w$}  {:<16} SECRET", "INITIATOR NAME", "CHAPUSER");
    for i in is {
        println!(
            "{:<w$}  {:<16} {}",
            label(i.get("name")),
            label(i.get("chap_user")),
            set_or_unset(i.get("chap_secret_set"))
        );
        if verbose {
            print_props(&[
                ("chapuser", label(i.get("chap_user"))),
                ("chapsecret", set_or_unset(i.get("chap_secret_set")).into()),
            ]);
        }
    }
}

fn print_resources(reply: &Value) {
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let mib = |v: Option<&Value>| format!("{:.1} MiB", n(v) as f64 / f64::from(1u32 << 20));
    let b = &reply["buffer_memory"];
    println!("iSCSI Target Resources:\n");
    let rows = [
        (
            "buffer-memory",
            format!("{} of {}", mib(b.get("used")), mib(b.get("limit"))),
        ),
        ("buffer-memory-peak", mib(b.get("peak"))),
        ("buffer-refusals", n(b.get("refused")).to_string()),
        (
            "connections",
            n(reply["connections"].get("open")).to_string(),
        ),
        (
            "connections-in-login",
            n(reply["connections"].get("in_login")).to_string(),
        ),
    ];
    for (k, v) in rows {
        let k = format!("{k}:");
        println!("{k:<24}{v}");
    }
    if let Some(Value::Object(r)) = reply.get("refused") {
        println!("refused:");
        for (k, v) in r {
            let k = format!("{k}:");
            println!("    {k:<28}{v}");
        }
    }
    for s in list(reply, "sessions") {
        println!(
            "session {} {}: buffers {} out, {} held of {}",
            n(s.get("tsih")),
            cli::value_label(&s["initiator"]),
            mib(s.get("buffers_out")),
            mib(s.get("buffer_memory")),
            mib(s.get("buffer_memory_limit")),
        );
    }
}

fn print_defaults(reply: &Value) {
    println!("iSCSI Target Default Properties:\n");
    let isns = if reply.get("isns").and_then(Value::as_bool) == Some(true) {
        "enabled"
    } else {
        "disabled"
    };
    let portals: Vec<String> = list(reply, "portals")
        .iter()
        .map(cli::value_label)
        .collect();
    let rows: Vec<(&str, String)> = vec![
        ("alias", label(reply.get("alias"))),
        ("auth", label(reply.get("auth"))),
        (
            "discovery-auth",
            match (
                label(reply.get("discovery_auth")).as_str(),
                reply.get("effective_discovery_auth"),
            ) {
                ("default", Some(e)) => format!("{} (auth)", cli::value_label(e)),
                (a, _) => a.to_owned(),
            },
        ),
        (
            "discovery-chapuser",
            label(reply.get("discovery_chap_user")),
        ),
        (
            "discovery-chapsecret",
            set_or_unset(reply.get("discovery_chap_secret_set")).into(),
        ),
        ("isns", isns.into()),
        ("default-portals", portals.join(",")),
        ("digest", label(reply.get("digests"))),
        ("nop-interval", seconds(reply.get("nop_interval_ms"))),
        ("nop-timeout", seconds(reply.get("nop_timeout_ms"))),
    ];
    for (k, v) in rows {
        let k = format!("{k}:");
        println!("{k:<24}{v}");
    }
    if let Some(Value::Object(limits)) = reply.get("limits") {
        println!("limits:");
        for (k, v) in limits {
            let k = format!("{k}:");
            println!("    {k:<28}{v}");
        }
    }
}

fn print_auth_stats(reply: &Value) {
    let n = |k: &str| label(reply.get(k));
    println!(
        "failed CHAP logins: {}   refused (throttled): {}   succeeded: {}",
        n("failures_total"),
        n("refused_total"),
        n("successes_total")
    );
    println!(
        "sources tracked: {}   throttled now: {}   evicted: {}",
        n("sources_tracked"),
        n("sources_throttled"),
        n("sources_evicted")
    );
    let srcs = list(reply, "sources");
    if srcs.is_empty() {
        return;
    }
    let w = srcs
        .iter()
        .map(|s| label(s.get("source")).len())
        .max()
        .unwrap_or(0)
        .max(15);
    println!(
        "\n{:<w$}  {:>8}  {:>11}  {:>8}  {:<14} LAST INITIATOR",
        "SOURCE", "FAILURES", "CONSECUTIVE", "REFUSED", "THROTTLED"
    );
    for s in srcs {
        let throttled = if s.get("throttled").and_then(Value::as_bool) == Some(true) {
            format!("yes, {}", seconds(s.get("throttled_for_ms")))
        } else {
            "no".into()
        };
        println!(
            "{:<w$}  {:>8}  {:>11}  {:>8}  {:<14} {}",
            label(s.get("source")),
            label(s.get("failures")),
            label(s.get("consecutive")),
            label(s.get("refused")),
            throttled,
            label(s.get("last_initiator"))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn first_line_strips_the_line_end() {
        assert_eq!(first_line(b"abc\r\nrest".to_vec()).unwrap().0, "abc");
        assert_eq!(first_line(b"abc".to_vec()).unwrap().0, "abc");
        assert!(matches!(
            first_line(b"\n".to_vec()),
            Err(SecretError::Empty)
        ));
        assert!(matches!(
            first_line(vec![0xff, b'\n']),
            Err(SecretError::NotUtf8)
        ));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_seconds("10"), Ok(10_000));
        assert_eq!(parse_seconds("0.3"), Ok(300));
        assert!(parse_seconds("-1").is_err() && parse_seconds("x").is_err());
        assert_eq!(parse_tunable("default"), Ok(Tunable::Default));
        assert_eq!(seconds(Some(&json!(1500))), "1.5s");
        assert_eq!(seconds(Some(&json!(10000))), "10s");
    }

    #[test]
    fn acl_none_clears() {
        assert_eq!(acl_value(&["none".into()]), json!([]));
        assert_eq!(acl_value(&["iqn.a:b".into()]), json!(["iqn.a:b"]));
    }
}
