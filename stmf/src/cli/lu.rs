//! LU administration shared by `stmfadm` and `sbdadm`: the arguments (`-s 10g`,
//! `-p prop=val`), the requests behind create-lu, import-lu, modify-lu and delete-lu, and
//! COMSTAR-style output of an sbd LU's description.
//!
//! Creating and importing go to an LU provider (`sbd` unless `--provider` says otherwise)
//! through `provider-control`; modify-lu and delete-lu ask the core which provider owns the
//! GUID first. delete-lu without `-k` then removes the LU's view entries in the core
//! (`remove-view` with `all`), as COMSTAR's `stmfadm delete-lu` does.

use super::{Client, ClientError};
use crate::control::{GuidsArgs, ProviderControlArgs, RemoveViewArgs, RemovedViews};
use crate::{Guid, LuInfo};
use serde_json::{json, Map, Value};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// The LU provider create-lu and import-lu use by default.
pub const DEFAULT_LU_PROVIDER: &str = "sbd";

/// Failure of an LU administration command.
#[derive(Debug, thiserror::Error)]
pub enum LuAdminError {
    /// The call to stmfd failed or the daemon refused it.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A path given on the command line could not be made absolute.
    #[error("{}: {source}", path.display())]
    Path {
        /// The path as given.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A property was given twice.
    #[error("property {0} given more than once")]
    DuplicateProperty(String),
    /// The provider's reply lacks what the command needs.
    #[error("unexpected reply from provider {provider}: {reply}")]
    BadReply {
        /// The provider.
        provider: String,
        /// Its reply.
        reply: String,
    },
}

/// Parses a size: bytes, or a number with a `k`, `m`, `g`, `t`, `p` or `e` suffix (powers of
/// 1024, either case, an optional trailing `b`): `512m`, `10G`, `4096`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid size {s:?}: expected bytes or a number with k/m/g/t/p/e");
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').filter(|r| !r.is_empty()).unwrap_or(&t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) => match "kmgtpe".find(c) {
            Some(n) => (&t[..i], 10 * (n as u32 + 1)),
            None => (t, 0),
        },
        None => return Err(bad()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Parses `name=value` (the value may be empty, the name may not).
pub fn parse_prop(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("invalid property {s:?}: expected name=value")),
    }
}

/// Arguments of create-lu.
#[derive(clap::Args, Clone, Debug)]
pub struct CreateLuArgs {
    /// Size (bytes, or with a k/m/g/t suffix: 512m, 10g); defaults to the file's length.
    #[arg(short = 's', value_name = "SIZE", value_parser = parse_size)]
    pub size: Option<u64>,
    /// LU property (alias, blk, guid, meta, mgmt-url, pid, serial, vid, wcd, wp, thin).
    #[arg(short = 'p', value_name = "PROP=VAL", value_parser = parse_prop)]
    pub props: Vec<(String, String)>,
    /// Back the LU with RAM instead of a file (needs -s; contents are lost at restart).
    #[arg(long, conflicts_with = "file")]
    pub ram: bool,
    /// Data file (created sparse when missing) or block device.
    #[arg(value_name = "FILE", required_unless_present = "ram")]
    pub file: Option<PathBuf>,
    /// LU provider to create the LU in.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_LU_PROVIDER)]
    pub provider: String,
}

/// Arguments of modify-lu.
#[derive(clap::Args, Clone, Debug)]
#[command(group(clap::ArgGroup::new("change").required(true).multiple(true).args(["size", "props"])))]
pub struct ModifyLuArgs {
    /// New size (grow only; bytes or with a k/m/g/t suffix).
    #[arg(short = 's', value_name = "SIZE", value_parser = parse_size)]
    pub size: Option<u64>,
    /// LU property to change (alias, mgmt-url, wcd, wp).
    #[arg(short = 'p', value_name = "PROP=VAL", value_parser = parse_prop)]
    pub props: Vec<(String, String)>,
    /// The LU: its GUID, or its data or metadata file.
    #[arg(value_name = "GUID|FILE")]
    pub lu: String,
    /// Provider to ask when the LU is named by file.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_LU_PROVIDER)]
    pub provider: String,
}

/// Arguments of delete-lu.
#[derive(clap::Args, Clone, Debug)]
pub struct DeleteLuArgs {
    /// Keep the LU's view entries (they apply again when it is imported).
    #[arg(short = 'k')]
    pub keep_views: bool,
    /// The LU.
    #[arg(value_name = "GUID")]
    pub guid: Guid,
}

/// Arguments of import-lu.
#[derive(clap::Args, Clone, Debug)]
pub struct ImportLuArgs {
    /// The LU's data file or its metadata file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// LU provider to import into.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_LU_PROVIDER)]
    pub provider: String,
}

/// A provider's reply to a command that names one LU.
#[derive(Clone, Debug)]
pub struct LuReply {
    /// The LU.
    pub guid: Guid,
    /// The reply as the provider sent it (printed with `--json`).
    pub reply: Value,
}

fn absolute(p: &Path) -> Result<PathBuf, LuAdminError> {
    std::path::absolute(p).map_err(|source| LuAdminError::Path {
        path: p.to_owned(),
        source,
    })
}

fn props_object(props: &[(String, String)]) -> Result<Map<String, Value>, LuAdminError> {
    let mut m = Map::new();
    for (k, v) in props {
        if m.insert(k.clone(), Value::String(v.clone())).is_some() {
            return Err(LuAdminError::DuplicateProperty(k.clone()));
        }
    }
    Ok(m)
}

/// Sends `request` to `provider`; the reply must name an LU in `guid` (or `deleted`).
fn lu_request(c: &mut Client, provider: &str, request: Value) -> Result<LuReply, LuAdminError> {
    let reply = provider_control(c, provider, request)?;
    let guid = ["guid", "deleted"]
        .iter()
        .find_map(|k| reply.get(*k).and_then(Value::as_str))
        .and_then(|g| g.parse().ok())
        .ok_or_else(|| LuAdminError::BadReply {
            provider: provider.to_owned(),
            reply: reply.to_string(),
        })?;
    Ok(LuReply { guid, reply })
}

/// Sends a JSON request to a provider through the core.
pub fn provider_control(
    c: &mut Client,
    provider: &str,
    request: Value,
) -> Result<Value, ClientError> {
    c.call(
        "provider-control",
        &ProviderControlArgs {
            provider: provider.to_owned(),
            request,
        },
    )
}

/// The core's description of one LU (`not-found` when it is not registered).
pub fn lu_info(c: &mut Client, guid: Guid) -> Result<LuInfo, ClientError> {
    let mut list: Vec<LuInfo> = c.call_as(
        "list-lu",
        &GuidsArgs {
            guids: Some(vec![guid]),
        },
    )?;
    list.pop()
        .ok_or_else(|| ClientError::BadReply(format!("list-lu did not return LU {guid}")))
}

/// create-lu: a file, block-device or RAM LU.
pub fn create_lu(c: &mut Client, a: &CreateLuArgs) -> Result<LuReply, LuAdminError> {
    let mut req = json!({ "op": "create-lu", "props": props_object(&a.props)? });
    match (&a.file, a.ram) {
        (Some(f), false) => {
            let path = absolute(f)?;
            let bdev = std::fs::metadata(&path).is_ok_and(|m| m.file_type().is_block_device());
            req["backing"] = json!(if bdev { "bdev" } else { "file" });
            req["path"] = json!(path);
        }
        // clap makes FILE and --ram exclusive and one of them required.
        _ => req["backing"] = json!("ram"),
    }
    if let Some(s) = a.size {
        req["size"] = json!(s);
    }
    lu_request(c, &a.provider, req)
}

/// import-lu: brings back an LU from its metadata.
pub fn import_lu(c: &mut Client, a: &ImportLuArgs) -> Result<LuReply, LuAdminError> {
    let req = json!({ "op": "import-lu", "path": absolute(&a.file)? });
    lu_request(c, &a.provider, req)
}

/// modify-lu: changes properties and/or grows the LU.
pub fn modify_lu(c: &mut Client, a: &ModifyLuArgs) -> Result<LuReply, LuAdminError> {
    let mut req = json!({ "op": "modify-lu", "props": props_object(&a.props)? });
    if let Some(s) = a.size {
        req["size"] = json!(s);
    }
    let provider = match a.lu.parse::<Guid>() {
        Ok(g) => {
            req["guid"] = json!(g);
            lu_info(c, g)?.provider
        }
        Err(_) => {
            req["path"] = json!(absolute(Path::new(&a.lu))?);
            a.provider.clone()
        }
    };
    lu_request(c, &provider, req)
}

/// delete-lu: unregisters the LU (its data and metadata stay); without `keep_views` its
/// view entries are removed too. The reply gains `views_removed`.
pub fn delete_lu(c: &mut Client, a: &DeleteLuArgs) -> Result<LuReply, LuAdminError> {
    let provider = lu_info(c, a.guid)?.provider;
    let req = json!({ "op": "delete-lu", "guid": a.guid, "keep_views": a.keep_views });
    let mut r = lu_request(c, &provider, req)?;
    let removed = if a.keep_views {
        0
    } else {
        let args = RemoveViewArgs {
            guid: a.guid,
            entries: None,
            all: true,
        };
        c.call_as::<RemovedViews, _>("remove-view", &args)?.removed
    };
    if let Value::Object(m) = &mut r.reply {
        m.insert("views_removed".into(), json!(removed));
    }
    Ok(r)
}

fn str_of<'a>(d: &'a Value, k: &str) -> Option<&'a str> {
    d.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn enabled(d: &Value, k: &str) -> String {
    match d.get(k).and_then(Value::as_bool) {
        Some(true) => "Enabled".into(),
        Some(false) => "Disabled".into(),
        None => "-".into(),
    }
}

/// Where an sbd LU's data lives, for humans: the data file, or `RAM`.
pub fn sbd_source(d: &Value) -> String {
    match str_of(d, "data") {
        Some(p) => p.to_owned(),
        None if str_of(d, "backing") == Some("ram") => "RAM".into(),
        None => "-".into(),
    }
}

/// The `list-lu -v` lines of an LU's provider description: COMSTAR's labels for an sbd LU
/// (recognised by its `block_size` and `backing` members), else the members as they are.
pub fn detail_fields(d: &Value) -> Vec<(String, String)> {
    let Value::Object(m) = d else {
        return Vec::new();
    };
    if !(m.contains_key("block_size") && m.contains_key("backing")) {
        return m
            .iter()
            .map(|(k, v)| (k.clone(), super::value_label(v)))
            .collect();
    }
    let or_unset = |k: &str| str_of(d, k).unwrap_or("not set").to_owned();
    let num = |k: &str| {
        d.get(k)
            .map(super::value_label)
            .unwrap_or_else(|| "-".into())
    };
    let mut f = vec![
        ("Backing Store".into(), num("backing")),
        ("Data File".into(), sbd_source(d)),
        ("Meta File".into(), or_unset("meta")),
        ("Size".into(), num("size")),
        ("Block Size".into(), num("block_size")),
        ("Management URL".into(), or_unset("mgmt_url")),
        ("Vendor ID".into(), num("vid")),
        ("Product ID".into(), num("pid")),
        ("Serial Num".into(), or_unset("serial")),
        ("Write Protect".into(), enabled(d, "write_protect")),
        ("Writeback Cache".into(), enabled(d, "write_cache")),
        ("Thin Provisioning".into(), enabled(d, "thin")),
    ];
    if let Some(a) = d.get("allocated").and_then(Value::as_u64) {
        f.push(("Allocated".into(), a.to_string()));
    }
    f.push(("Access State".into(), "Active".into()));
    f
}

/// The alias to show: the provider's (current after modify-lu), else the core's.
pub fn alias_of(l: &LuInfo) -> String {
    str_of(&l.details, "alias")
        .map(str::to_owned)
        .or_else(|| (!l.alias.is_empty()).then(|| l.alias.clone()))
        .unwrap_or_else(|| "-".into())
}

/// Prints sbdadm's LU table (`GUID  DATA SIZE  SOURCE`), one row per `(guid, size, source)`.
pub fn print_lu_table(rows: &[(String, String, String)]) {
    println!("              GUID                    DATA SIZE           SOURCE");
    println!("--------------------------------  -------------------  ----------------");
    for (guid, size, source) in rows {
        println!("{guid:<32}  {size:<19}  {source}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("1t"), Ok(1 << 40));
        assert_eq!(parse_size("2kb"), Ok(2048));
        assert_eq!(parse_size(" 8K "), Ok(8192));
        for bad in [
            "",
            "m",
            "-1",
            "1.5g",
            "10x",
            "g10",
            "b",
            "99999999999999999999",
            "16e",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn props() {
        assert_eq!(parse_prop("alias=a=b"), Ok(("alias".into(), "a=b".into())));
        assert_eq!(parse_prop("alias="), Ok(("alias".into(), String::new())));
        assert!(parse_prop("=x").is_err());
        assert!(parse_prop("wcd").is_err());
        let dup = props_object(&[("wp".into(), "true".into()), ("wp".into(), "false".into())]);
        assert!(matches!(dup, Err(LuAdminError::DuplicateProperty(p)) if p == "wp"));
    }

    #[derive(clap::Parser, Debug)]
    enum T {
        Create(CreateLuArgs),
        Modify(ModifyLuArgs),
        Delete(DeleteLuArgs),
    }

    #[test]
    fn argument_rules() {
        let ok = |a: &[&str]| T::try_parse_from(a).map_err(|e| e.to_string());
        assert!(ok(&["t", "create", "--ram"]).is_ok());
        assert!(ok(&["t", "create", "-s", "1g", "-p", "wcd=true", "/f"]).is_ok());
        assert!(ok(&["t", "create"]).is_err(), "FILE or --ram is required");
        assert!(ok(&["t", "create", "--ram", "/f"]).is_err());
        assert!(ok(&["t", "create", "-s", "lots", "/f"]).is_err());
        assert!(ok(&["t", "modify", "600144F0000000000000000000000001"]).is_err());
        assert!(ok(&["t", "modify", "-s", "2g", "/f"]).is_ok());
        assert!(ok(&["t", "delete", "-k", "600144F0000000000000000000000001"]).is_ok());
        assert!(ok(&["t", "delete", "nope"]).is_err());
    }

    #[test]
    fn sbd_details() {
        let d = json!({"backing":"ram","block_size":512,"size":1048576,"alias":"a",
            "write_cache":true,"write_protect":false,"thin":true,"vid":"RSTMF","pid":"SBD",
            "serial":"","mgmt_url":"","meta":null,"data":null});
        let f = detail_fields(&d);
        let get = |k: &str| f.iter().find(|(l, _)| l == k).map(|(_, v)| v.as_str());
        assert_eq!(get("Data File"), Some("RAM"));
        assert_eq!(get("Meta File"), Some("not set"));
        assert_eq!(get("Writeback Cache"), Some("Enabled"));
        assert_eq!(get("Write Protect"), Some("Disabled"));
        assert_eq!(get("Size"), Some("1048576"));
        assert!(f.iter().all(|(l, _)| l.len() <= "Operational Status".len()));
        let other = detail_fields(&json!({"size_mb": 16}));
        assert_eq!(other, vec![("size_mb".to_owned(), "16".to_owned())]);
    }
}
