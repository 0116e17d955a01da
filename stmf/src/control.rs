//! The control protocol of stmfd: line-delimited JSON over a Unix socket.
//!
//! A request is one line `{"v":1,"id":<any>,"cmd":"list-lu","args":{..}}`; the reply is one
//! line `{"v":1,"id":<same>,"ok":true,"result":..}` or
//! `{"v":1,"id":<same>,"ok":false,"error":{"kind":"not-found","message":".."}}` where `kind`
//! is an [`ErrorKind`]. The full description is `docs/control-protocol.md`.
//!
//! [`handle`] answers one request line and has no I/O of its own besides saving the
//! configuration after a change; [`serve_connection`] runs it over a byte stream;
//! [`ClientSlots`] and [`serve_client`] bound what a client of the Unix socket can hold
//! (a slot among [`ClientLimits::max_clients`], a request line of [`MAX_REQUEST_LINE`]
//! bytes, and [`ClientLimits::timeout`] to send each request and to take each reply).

use crate::config::{ConfigError, ConfigStore};
use crate::{ErrorKind, GroupInfo, Guid, ProviderInfo, Result, Stmf, StmfError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::cell::Cell;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Version of the protocol this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest request line accepted, in bytes (without the newline).
pub const MAX_REQUEST_LINE: usize = 1 << 20;
/// Default for [`ClientLimits::max_clients`] (`stmfd --max-control-clients`).
pub const DEFAULT_MAX_CLIENTS: usize = 64;
/// Default for [`ClientLimits::timeout`] (`stmfd --control-timeout-ms`).
pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default path of the control socket.
pub const DEFAULT_SOCKET: &str = "/run/rstmf/stmfd.sock";

/// A request line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Protocol version ([`PROTOCOL_VERSION`]).
    pub v: u32,
    /// Echoed in the reply.
    #[serde(default)]
    pub id: Value,
    /// Command name.
    pub cmd: String,
    /// Command arguments (an object; may be omitted when the command takes none).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub args: Value,
}

/// The `error` member of a failed reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Kind of failure.
    pub kind: ErrorKind,
    /// Human-readable message.
    pub message: String,
}

impl From<StmfError> for ErrorBody {
    fn from(e: StmfError) -> Self {
        ErrorBody {
            kind: e.kind,
            message: e.message,
        }
    }
}

impl From<ErrorBody> for StmfError {
    fn from(e: ErrorBody) -> Self {
        StmfError::new(e.kind, e.message)
    }
}

/// A reply line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// Protocol version spoken by the daemon.
    pub v: u32,
    /// The request's `id` (`null` if it could not be read).
    #[serde(default)]
    pub id: Value,
    /// Whether the command succeeded.
    pub ok: bool,
    /// The result when `ok` (`null` for commands that return nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The error when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Reply {
    /// A successful reply.
    pub fn ok(id: Value, result: Value) -> Self {
        Reply {
            v: PROTOCOL_VERSION,
            id,
            ok: true,
            result: Some(result),
            error: None,
        }
    }
    /// A failed reply.
    pub fn err(id: Value, e: StmfError) -> Self {
        Reply {
            v: PROTOCOL_VERSION,
            id,
            ok: false,
            result: None,
            error: Some(e.into()),
        }
    }
    /// The reply as a `Result`.
    pub fn into_result(self) -> Result<Value> {
        match (self.ok, self.error) {
            (true, _) => Ok(self.result.unwrap_or(Value::Null)),
            (false, Some(e)) => Err(e.into()),
            (false, None) => Err(StmfError::new(
                ErrorKind::Protocol,
                "error reply without an error member",
            )),
        }
    }
}

// ---- command arguments (shared with the CLIs) ----

/// Arguments of commands that take none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// `load-provider`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathArgs {
    /// Absolute path of the provider library.
    pub path: String,
}

/// Commands naming one object: providers, groups, targets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameArgs {
    /// Object name.
    pub name: String,
}

/// `provider-control`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderControlArgs {
    /// Provider name.
    pub provider: String,
    /// Request, handed to the provider as its JSON text.
    pub request: Value,
}

/// `add-hg-member`, `remove-hg-member`, `add-tg-member`, `remove-tg-member`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembersArgs {
    /// Group name.
    pub group: String,
    /// Member names (at least one).
    pub members: Vec<String>,
}

/// `list-hg`, `list-tg`, `list-target`: all objects, or only the named ones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamesArgs {
    /// Names to list (all when absent or empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
}

/// `list-lu`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuidsArgs {
    /// LUs to list (all when absent or empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guids: Option<Vec<Guid>>,
}

/// `online-lu`, `offline-lu`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuidArgs {
    /// The LU.
    pub guid: Guid,
}

/// `add-view`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddViewArgs {
    /// The LU.
    pub guid: Guid,
    /// Host group (all hosts when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_group: Option<String>,
    /// Target group (all targets when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_group: Option<String>,
    /// LUN (lowest free when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lun: Option<u16>,
}

/// `remove-view`: either `entries` or `all`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveViewArgs {
    /// The LU.
    pub guid: Guid,
    /// Entry indexes to remove.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<u32>>,
    /// Remove every entry of the LU.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
}

/// `list-view`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListViewArgs {
    /// The LU.
    pub guid: Guid,
    /// Entries to list (all when absent or empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<u32>>,
}

/// Result of `remove-view`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedViews {
    /// Number of entries removed.
    pub removed: usize,
}

// ---- dispatcher ----

/// State of one request being handled.
struct Ctx<'a> {
    stmf: &'a Stmf,
    store: &'a ConfigStore,
    /// Set when the running state may have changed: the configuration must be saved.
    dirty: Cell<bool>,
}

impl Ctx<'_> {
    /// Passes `r` through, noting a change when it succeeded.
    fn changed<T>(&self, r: Result<T>) -> Result<T> {
        if r.is_ok() {
            self.dirty.set(true);
        }
        r
    }
}

type Handler = fn(&Ctx<'_>, Value) -> Result<Value>;

/// One command: name, whether it changes the configuration, handler.
struct Command {
    name: &'static str,
    mutating: bool,
    run: Handler,
}

/// The command changes state: the configuration is saved after it.
const SAVES: bool = true;
/// The command only reads.
const READS: bool = false;

const fn cmd(name: &'static str, mutating: bool, run: Handler) -> Command {
    Command {
        name,
        mutating,
        run,
    }
}

const COMMANDS: &[Command] = &[
    cmd("list-state", READS, list_state),
    cmd("list-provider", READS, list_provider),
    cmd("load-provider", SAVES, load_provider),
    cmd("unload-provider", SAVES, unload_provider),
    cmd("provider-control", SAVES, provider_control),
    cmd("create-hg", SAVES, |c, a| name_op(c, a, Stmf::create_hg)),
    cmd("delete-hg", SAVES, |c, a| name_op(c, a, Stmf::delete_hg)),
    cmd("add-hg-member", SAVES, |c, a| {
        members_op(c, a, Stmf::add_hg_member, Stmf::remove_hg_member)
    }),
    cmd("remove-hg-member", SAVES, |c, a| {
        members_op(c, a, Stmf::remove_hg_member, Stmf::add_hg_member)
    }),
    cmd("list-hg", READS, |c, a| {
        list_groups(c, a, Stmf::list_hg, "host group")
    }),
    cmd("create-tg", SAVES, |c, a| name_op(c, a, Stmf::create_tg)),
    cmd("delete-tg", SAVES, |c, a| name_op(c, a, Stmf::delete_tg)),
    cmd("add-tg-member", SAVES, |c, a| {
        members_op(c, a, Stmf::add_tg_member, Stmf::remove_tg_member)
    }),
    cmd("remove-tg-member", SAVES, |c, a| {
        members_op(c, a, Stmf::remove_tg_member, Stmf::add_tg_member)
    }),
    cmd("list-tg", READS, |c, a| {
        list_groups(c, a, Stmf::list_tg, "target group")
    }),
    cmd("add-view", SAVES, add_view),
    cmd("remove-view", SAVES, remove_view),
    cmd("list-view", READS, list_view),
    cmd("list-lu", READS, list_lu),
    cmd("online-lu", SAVES, |c, a| guid_op(c, a, Stmf::online_lu)),
    cmd("offline-lu", SAVES, |c, a| guid_op(c, a, Stmf::offline_lu)),
    cmd("list-target", READS, list_target),
    cmd("online-target", SAVES, |c, a| {
        name_op(c, a, Stmf::online_target)
    }),
    cmd("offline-target", SAVES, |c, a| {
        name_op(c, a, Stmf::offline_target)
    }),
];

/// Names of the commands the protocol knows, in documentation order.
pub fn command_names() -> impl Iterator<Item = &'static str> {
    COMMANDS.iter().map(|c| c.name)
}

fn protocol(msg: impl Into<String>) -> StmfError {
    StmfError::new(ErrorKind::Protocol, msg)
}

fn to_value<T: Serialize>(v: T) -> Result<Value> {
    serde_json::to_value(v)
        .map_err(|e| StmfError::new(ErrorKind::Internal, format!("cannot encode result: {e}")))
}

/// Answers one request line (without its newline) with one reply line (without newline).
pub fn handle(stmf: &Stmf, store: &ConfigStore, line: &str) -> String {
    let reply = handle_request(stmf, store, line);
    serde_json::to_string(&reply).unwrap_or_else(|e| {
        let r = Reply::err(
            reply.id,
            StmfError::new(ErrorKind::Internal, format!("cannot encode reply: {e}")),
        );
        serde_json::to_string(&r).unwrap_or_default()
    })
}

/// [`handle`] without the final encoding.
pub fn handle_request(stmf: &Stmf, store: &ConfigStore, line: &str) -> Reply {
    let value: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            return Reply::err(
                Value::Null,
                protocol(format!("malformed JSON request: {e}")),
            )
        }
    };
    let Value::Object(mut obj) = value else {
        return Reply::err(Value::Null, protocol("a request must be a JSON object"));
    };
    let id = obj.remove("id").unwrap_or(Value::Null);
    match parse_envelope(obj) {
        Ok((cmd, args)) => match dispatch(stmf, store, cmd, args) {
            Ok(result) => Reply::ok(id, result),
            Err(e) => Reply::err(id, e),
        },
        Err(e) => Reply::err(id, e),
    }
}

/// Checks `v`, `cmd` and `args` (`id` already removed).
fn parse_envelope(mut obj: serde_json::Map<String, Value>) -> Result<(&'static Command, Value)> {
    match obj.remove("v") {
        None => {
            return Err(protocol(format!(
                "missing \"v\": protocol version (stmfd speaks version {PROTOCOL_VERSION})"
            )))
        }
        Some(v) if v.as_u64() == Some(u64::from(PROTOCOL_VERSION)) => {}
        Some(v) => {
            return Err(protocol(format!(
                "unsupported protocol version {v}; stmfd supports version {PROTOCOL_VERSION}"
            )))
        }
    }
    let cmd = match obj.remove("cmd") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(protocol("\"cmd\" must be a string")),
        None => return Err(protocol("missing \"cmd\"")),
    };
    let args = match obj.remove("args") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(a @ Value::Object(_)) => a,
        Some(_) => {
            return Err(StmfError::invalid(format!(
                "{cmd}: \"args\" must be a JSON object"
            )))
        }
    };
    if let Some(k) = obj.keys().next() {
        return Err(protocol(format!(
            "unknown request member {k:?} (expected v, id, cmd, args)"
        )));
    }
    let command = COMMANDS.iter().find(|c| c.name == cmd).ok_or_else(|| {
        let known: Vec<&str> = command_names().collect();
        protocol(format!(
            "unknown command {cmd:?}; known commands: {}",
            known.join(", ")
        ))
    })?;
    Ok((command, args))
}

fn dispatch(stmf: &Stmf, store: &ConfigStore, cmd: &Command, args: Value) -> Result<Value> {
    let _gate = if cmd.mutating {
        match store.begin_change() {
            Ok(g) => Some(g),
            Err(e) => return Err(StmfError::new(ErrorKind::BadState, e.to_string())),
        }
    } else {
        None
    };
    let ctx = Ctx {
        stmf,
        store,
        dirty: Cell::new(false),
    };
    let result = (cmd.run)(&ctx, args).map_err(|mut e| {
        if e.kind == ErrorKind::InvalidArgument && !e.message.starts_with(cmd.name) {
            e.message = format!("{}: {}", cmd.name, e.message);
        }
        e
    });
    match &result {
        Ok(_) => tracing::debug!(cmd = cmd.name, "control request done"),
        Err(e) => {
            tracing::debug!(cmd = cmd.name, kind = ?e.kind, "control request failed: {}", e.message)
        }
    }
    if !ctx.dirty.get() {
        return result;
    }
    match (store.save(stmf), result) {
        (Ok(()), r) => r,
        (Err(se), Ok(_)) => {
            tracing::error!("{se}");
            Err(save_failed(cmd.name, &se))
        }
        (Err(se), Err(mut e)) => {
            tracing::error!("{se}");
            e.message = format!("{}; saving the configuration also failed: {se}", e.message);
            Err(e)
        }
    }
}

fn save_failed(cmd: &str, e: &ConfigError) -> StmfError {
    StmfError::new(
        ErrorKind::Io,
        format!("{cmd} was applied but the configuration could not be saved: {e}"),
    )
}

fn args<T: DeserializeOwned>(v: Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| StmfError::invalid(format!("invalid arguments: {e}")))
}

/// Keeps the items whose key is in `wanted` (in that order), or all when `wanted` is empty.
fn select<T, K: PartialEq>(
    items: Vec<T>,
    wanted: Option<Vec<K>>,
    key: impl Fn(&T) -> K,
    not_found: impl Fn(&K) -> String,
) -> Result<Vec<T>> {
    let wanted = match wanted {
        Some(w) if !w.is_empty() => w,
        _ => return Ok(items),
    };
    let mut items: Vec<Option<T>> = items.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(wanted.len());
    for w in wanted {
        let pos = items
            .iter()
            .position(|i| i.as_ref().is_some_and(|i| key(i) == w));
        match pos.and_then(|p| items[p].take()) {
            Some(i) => out.push(i),
            None if out.iter().any(|i| key(i) == w) => {} // asked twice
            None => return Err(StmfError::not_found(not_found(&w))),
        }
    }
    Ok(out)
}

fn list_state(c: &Ctx<'_>, a: Value) -> Result<Value> {
    args::<NoArgs>(a)?;
    to_value(c.stmf.state())
}

fn list_provider(c: &Ctx<'_>, a: Value) -> Result<Value> {
    args::<NoArgs>(a)?;
    let mut list = c.stmf.list_providers();
    for r in c.store.retained_providers() {
        if !list.iter().any(|p| p.name == r.entry.name) {
            list.push(ProviderInfo {
                name: r.entry.name,
                kind: "unknown".into(),
                version: String::new(),
                description: String::new(),
                path: r.entry.path,
                abi_version: 0,
                objects: 0,
                failed: Some(format!("not loaded: {}", r.reason)),
            });
        }
    }
    to_value(list)
}

fn load_provider(c: &Ctx<'_>, a: Value) -> Result<Value> {
    let a: PathArgs = args(a)?;
    if !Path::new(&a.path).is_absolute() {
        return Err(StmfError::invalid(format!(
            "provider path {:?} is not absolute",
            a.path
        )));
    }
    // A provider of the saved configuration that failed to load gets its configuration back.
    let config = c
        .store
        .retained_config_for_path(&a.path)
        .unwrap_or_default();
    let info = c.changed(c.stmf.load_provider(Path::new(&a.path), &config))?;
    c.store.forget_provider(&info.name);
    c.store.forget_provider_path(&a.path);
    to_value(info)
}

fn unload_provider(c: &Ctx<'_>, a: Value) -> Result<Value> {
    let a: NameArgs = args(a)?;
    match c.stmf.unload_provider(&a.name) {
        Ok(()) => c.dirty.set(true),
        // A saved provider that is not loaded: drop it from the configuration.
        Err(e) if e.kind == ErrorKind::NotFound && c.store.forget_provider(&a.name) => {
            c.dirty.set(true)
        }
        Err(e) => return Err(e),
    }
    Ok(Value::Null)
}

fn provider_control(c: &Ctx<'_>, a: Value) -> Result<Value> {
    let a: ProviderControlArgs = args(a)?;
    // Even a failed request may have changed the provider's objects: always save.
    c.dirty.set(true);
    let reply = c
        .stmf
        .provider_control(&a.provider, &a.request.to_string())?;
    Ok(serde_json::from_str(&reply).unwrap_or(Value::String(reply)))
}

fn name_op(c: &Ctx<'_>, a: Value, op: fn(&Stmf, &str) -> Result<()>) -> Result<Value> {
    let a: NameArgs = args(a)?;
    c.changed(op(c.stmf, &a.name))?;
    Ok(Value::Null)
}

fn guid_op(c: &Ctx<'_>, a: Value, op: fn(&Stmf, Guid) -> Result<()>) -> Result<Value> {
    let a: GuidArgs = args(a)?;
    c.changed(op(c.stmf, a.guid))?;
    Ok(Value::Null)
}

/// Applies `op` to each member; on the first failure undoes the members done so far, so the
/// command is all or nothing.
fn members_op(
    c: &Ctx<'_>,
    a: Value,
    op: fn(&Stmf, &str, &str) -> Result<()>,
    undo: fn(&Stmf, &str, &str) -> Result<()>,
) -> Result<Value> {
    let a: MembersArgs = args(a)?;
    if a.members.is_empty() {
        return Err(StmfError::invalid("no members given"));
    }
    for (i, m) in a.members.iter().enumerate() {
        if let Err(e) = c.changed(op(c.stmf, &a.group, m)) {
            for done in a.members[..i].iter().rev() {
                if let Err(u) = undo(c.stmf, &a.group, done) {
                    tracing::warn!(group = %a.group, member = %done, "cannot undo membership change: {u}");
                }
            }
            return Err(e);
        }
    }
    Ok(Value::Null)
}

fn list_groups(
    c: &Ctx<'_>,
    a: Value,
    list: fn(&Stmf) -> Vec<GroupInfo>,
    what: &str,
) -> Result<Value> {
    let a: NamesArgs = args(a)?;
    to_value(select(
        list(c.stmf),
        a.names,
        |g| g.name.clone(),
        |n| format!("{what} {n} not found"),
    )?)
}

fn add_view(c: &Ctx<'_>, a: Value) -> Result<Value> {
    let a: AddViewArgs = args(a)?;
    let entry = c.changed(c.stmf.add_view(
        a.guid,
        a.host_group.as_deref(),
        a.target_group.as_deref(),
        a.lun,
    ))?;
    to_value(entry)
}

fn remove_view(c: &Ctx<'_>, a: Value) -> Result<Value> {
    let a: RemoveViewArgs = args(a)?;
    let entries = a.entries.unwrap_or_default();
    let removed = match (a.all, entries.is_empty()) {
        (true, false) => return Err(StmfError::invalid("give either entries or all, not both")),
        (false, true) => return Err(StmfError::invalid("no view entries given (or set all)")),
        (true, true) => c.changed(c.stmf.remove_all_views(a.guid))?,
        (false, false) => {
            // Check them all first so that a typo removes nothing.
            let existing = c.stmf.list_view(a.guid)?;
            if let Some(missing) = entries
                .iter()
                .find(|e| !existing.iter().any(|v| v.index == **e))
            {
                return Err(StmfError::not_found(format!(
                    "view entry {missing} of LU {} not found",
                    a.guid
                )));
            }
            let mut n = 0;
            for e in entries {
                if existing.iter().any(|v| v.index == e) {
                    c.changed(c.stmf.remove_view(a.guid, e))?;
                    n += 1;
                }
            }
            n
        }
    };
    to_value(RemovedViews { removed })
}

fn list_view(c: &Ctx<'_>, a: Value) -> Result<Value> {
    let a: ListViewArgs = args(a)?;
    let not_found = |e: &u32| format!("view entry {e} of LU {} not found", a.guid);
    to_value(select(
        c.stmf.list_view(a.guid)?,
        a.entries,
        |v| v.index,
        not_found,
    )?)
}

fn list_lu(c: &Ctx<'_>, a: Value) -> Result<Value> {
    let a: GuidsArgs = args(a)?;
    to_value(select(
        c.stmf.list_lu(),
        a.guids,
        |l| l.guid,
        |g| format!("LU {g} not found"),
    )?)
}

fn list_target(c: &Ctx<'_>, a: Value) -> Result<Value> {
    let a: NamesArgs = args(a)?;
    to_value(select(
        c.stmf.list_targets(),
        a.names,
        |t| t.name.clone(),
        |n| format!("target {n} not found"),
    )?)
}

// ---- connection loop ----

/// Serves one client: reads request lines, writes reply lines, until end of stream.
///
/// A line longer than [`MAX_REQUEST_LINE`] gets a `protocol` error and the connection is
/// closed (the rest of the line cannot be skipped safely); every other bad request gets an
/// error reply and the connection goes on. No timeouts: see [`serve_client`] for a socket.
pub fn serve_connection(
    stmf: &Stmf,
    store: &ConfigStore,
    reader: impl BufRead,
    writer: impl Write,
) -> io::Result<()> {
    serve_lines(stmf, store, reader, writer, || {})
}

/// [`serve_connection`], calling `replied` after each reply is written.
fn serve_lines(
    stmf: &Stmf,
    store: &ConfigStore,
    mut reader: impl BufRead,
    mut writer: impl Write,
    mut replied: impl FnMut(),
) -> io::Result<()> {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader
            .by_ref()
            .take(MAX_REQUEST_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        let complete = buf.last() == Some(&b'\n');
        if !complete && buf.len() > MAX_REQUEST_LINE {
            let e = protocol(format!(
                "request line longer than {MAX_REQUEST_LINE} bytes; closing the connection"
            ));
            write_reply(&mut writer, &Reply::err(Value::Null, e))?;
            return Ok(());
        }
        let line = match std::str::from_utf8(&buf) {
            Ok(s) => s.trim(),
            Err(_) => {
                write_reply(
                    &mut writer,
                    &Reply::err(Value::Null, protocol("request is not UTF-8")),
                )?;
                replied();
                continue;
            }
        };
        if !line.is_empty() {
            let mut reply = handle(stmf, store, line);
            reply.push('\n');
            writer.write_all(reply.as_bytes())?;
            writer.flush()?;
            replied();
        }
        if !complete {
            return Ok(()); // end of stream after a last line without newline
        }
    }
}

fn write_reply(w: &mut impl Write, r: &Reply) -> io::Result<()> {
    let mut s = serde_json::to_string(r).map_err(io::Error::other)?;
    s.push('\n');
    w.write_all(s.as_bytes())?;
    w.flush()
}

/// What one client of the control socket may hold (`docs/control-protocol.md`, "Limits").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// Clients served at once; one more gets a `busy` error line and is closed.
    pub max_clients: usize,
    /// Time a client has to send each complete request line (counted from the connection
    /// or from the previous reply), and to take each reply; past it the connection is closed
    /// (after a `protocol` error line when the request was late).
    pub timeout: Duration,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            max_clients: DEFAULT_MAX_CLIENTS,
            timeout: DEFAULT_CLIENT_TIMEOUT,
        }
    }
}

/// Counts the clients being served, up to a maximum.
#[derive(Debug)]
pub struct ClientSlots {
    active: AtomicUsize,
    max: usize,
}

/// One client's slot, freed on drop.
#[derive(Debug)]
pub struct ClientSlot(Arc<ClientSlots>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ClientSlots {
    /// Room for `max` clients at once.
    pub fn new(max: usize) -> Arc<ClientSlots> {
        Arc::new(ClientSlots {
            active: AtomicUsize::new(0),
            max,
        })
    }

    /// A slot, or `None` when `max` clients are being served.
    pub fn try_acquire(self: &Arc<Self>) -> Option<ClientSlot> {
        self.active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| ClientSlot(self.clone()))
    }

    /// Clients being served.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }
}

/// Tells a client beyond the cap why it is closed: one `busy` error line, written without
/// blocking (a client that does not read loses it), then the stream is dropped.
pub fn refuse_client(stream: UnixStream, max: usize) {
    let e = StmfError::busy(format!(
        "too many control clients (the limit is {max}, stmfd --max-control-clients); try again later"
    ));
    let Ok(mut s) = serde_json::to_string(&Reply::err(Value::Null, e)) else {
        return;
    };
    s.push('\n');
    if stream.set_nonblocking(true).is_ok() {
        let _ = (&stream).write(s.as_bytes());
    }
}

/// Reads from a Unix stream until a deadline that the serving loop moves.
struct DeadlineReader<'a> {
    stream: &'a UnixStream,
    deadline: &'a Cell<Instant>,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self
            .deadline
            .get()
            .saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        match (&*self.stream).read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::ErrorKind::TimedOut.into()),
            r => r,
        }
    }
}

/// Serves one client of the Unix socket within `limits.timeout`: each request line must be
/// complete within it (from the connection or the previous reply; blank lines do not
/// count), and each reply must be taken within it. A late request gets one `protocol` error
/// line, then the connection is closed.
pub fn serve_client(
    stmf: &Stmf,
    store: &ConfigStore,
    stream: &UnixStream,
    limits: &ClientLimits,
) -> io::Result<()> {
    let timeout = limits.timeout;
    stream.set_write_timeout(Some(timeout))?;
    let deadline = Cell::new(Instant::now() + timeout);
    let reader = BufReader::new(DeadlineReader {
        stream,
        deadline: &deadline,
    });
    let r = serve_lines(stmf, store, reader, stream, || {
        deadline.set(Instant::now() + timeout)
    });
    match r {
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            let e = protocol(format!(
                "no complete request within {} ms; closing the connection",
                timeout.as_millis()
            ));
            let _ = write_reply(&mut &*stream, &Reply::err(Value::Null, e));
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client sent no complete request in time",
            ))
        }
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_filters_in_order() {
        let items = vec![1u32, 2, 3];
        let nf = |i: &u32| format!("entry {i} not found");
        assert_eq!(
            select(items.clone(), None, |i| *i, nf).unwrap(),
            vec![1, 2, 3]
        );
        assert_eq!(
            select(items.clone(), Some(vec![]), |i| *i, nf).unwrap(),
            vec![1, 2, 3]
        );
        assert_eq!(
            select(items.clone(), Some(vec![3, 1, 3]), |i| *i, nf).unwrap(),
            vec![3, 1]
        );
        let e = select(items, Some(vec![4]), |i| *i, nf).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert_eq!(e.message, "entry 4 not found");
    }

    #[test]
    fn envelope_errors() {
        let parse = |s: &str| {
            let Value::Object(mut o) = serde_json::from_str::<Value>(s).unwrap() else {
                panic!()
            };
            o.remove("id");
            parse_envelope(o).map(|(c, a)| (c.name, a))
        };
        assert_eq!(
            parse(r#"{"v":2,"cmd":"list-lu"}"#).unwrap_err().kind,
            ErrorKind::Protocol
        );
        assert!(parse(r#"{"v":2,"cmd":"list-lu"}"#)
            .unwrap_err()
            .message
            .contains("version 1"));
        assert_eq!(
            parse(r#"{"cmd":"list-lu"}"#).unwrap_err().kind,
            ErrorKind::Protocol
        );
        assert_eq!(
            parse(r#"{"v":1,"cmd":"nope"}"#).unwrap_err().kind,
            ErrorKind::Protocol
        );
        assert_eq!(
            parse(r#"{"v":1,"cmd":7}"#).unwrap_err().kind,
            ErrorKind::Protocol
        );
        assert_eq!(
            parse(r#"{"v":1,"cmd":"list-lu","args":[]}"#)
                .unwrap_err()
                .kind,
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            parse(r#"{"v":1,"cmd":"list-lu","extra":1}"#)
                .unwrap_err()
                .kind,
            ErrorKind::Protocol
        );
        let (name, a) = parse(r#"{"v":1,"cmd":"list-lu"}"#).unwrap();
        assert_eq!((name, a), ("list-lu", serde_json::json!({})));
    }

    #[test]
    fn args_are_typed() {
        let e = args::<NameArgs>(serde_json::json!({})).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("name"), "{}", e.message);
        assert!(args::<NameArgs>(serde_json::json!({"name": 5})).is_err());
        assert!(args::<NameArgs>(serde_json::json!({"name": "a", "x": 1})).is_err());
        assert!(args::<GuidArgs>(serde_json::json!({"guid": "xyz"})).is_err());
        let v: RemoveViewArgs =
            args(serde_json::json!({"guid": "600144F0000000000000000000000001", "all": true}))
                .unwrap();
        assert!(v.all && v.entries.is_none());
    }

    #[test]
    fn client_slots_cap_and_free() {
        let slots = ClientSlots::new(2);
        let a = slots.try_acquire().expect("first");
        let b = slots.try_acquire().expect("second");
        assert!(slots.try_acquire().is_none(), "third refused");
        assert_eq!(slots.active(), 2);
        drop(a);
        let c = slots.try_acquire().expect("a slot was freed");
        drop((b, c));
        assert_eq!(slots.active(), 0);
    }

    #[test]
    fn reply_shapes() {
        let ok = serde_json::to_value(Reply::ok(serde_json::json!(7), Value::Null)).unwrap();
        assert_eq!(
            ok,
            serde_json::json!({"v":1,"id":7,"ok":true,"result":null})
        );
        let err = serde_json::to_value(Reply::err(Value::Null, StmfError::not_found("x"))).unwrap();
        assert_eq!(
            err,
            serde_json::json!({"v":1,"id":null,"ok":false,"error":{"kind":"not-found","message":"x"}})
        );
        let back: Reply = serde_json::from_value(ok).unwrap();
        assert_eq!(back.into_result().unwrap(), Value::Null);
    }
}
