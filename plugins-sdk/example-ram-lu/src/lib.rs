//! # example-ram-lu: a complete, small LU provider to copy
//!
//! A logical-unit provider for the rstmf core that serves RAM disks. It is the example a
//! vendor starts from (see `README.md` next to this crate): everything a provider needs is
//! here and nothing else.
//!
//! * [`RamProvider`] is the [`Provider`]: the object the core creates when it loads the
//!   library. It answers management requests ([`Provider::control`]), saves its configuration
//!   ([`Provider::save_config`]) and recreates it at the next load ([`Provider::create`]).
//! * [`RamLu`] is one LU: it implements [`plugins_sdk::Lu`], the SCSI commands of a small
//!   block device and the data path through the port's buffers (see the [`lu`] module).
//! * [`export_provider!`](plugins_sdk::export_provider) exports the root module the core
//!   looks up with `dlsym`, with the SDK ABI version and layout table it checks.
//!
//! ## Management requests
//!
//! `stmfadm`-style tools send JSON through the core to [`Provider::control`]:
//!
//! | request | reply |
//! |---|---|
//! | `{"op":"create-lu","size_mb":64,"alias":"scratch","block_size":512,"guid":"600144F0…"}` | `{"guid":"600144F0…"}` |
//! | `{"op":"delete-lu","guid":"600144F0…"}` | `{"deleted":"600144F0…"}` |
//! | `{"op":"list-lu"}` | `{"lus":[{"guid":…,"alias":…,"size_mb":…,"block_size":…}]}` |
//!
//! `alias` (default empty), `block_size` (512 or 4096, default 512) and `guid` (32 hex digits,
//! NAA 6; generated when absent) are optional.
//!
//! ## What persists
//!
//! [`Provider::save_config`] returns the LU *definitions* (`{"version":1,"lus":[…]}`); the
//! core stores them and passes them back to [`Provider::create`] when it starts again, so the
//! same LUs come back with the same GUIDs. Their *contents* are RAM and are lost: after a
//! restart every LU reads as zeros.

#![warn(missing_docs)]

use plugins_sdk::scsi::naa as guid;
pub mod lu;
mod store;

pub use lu::RamLu;

use plugins_sdk::{Host, LuHandle, Provider, ProviderContext, ProviderKind, Status};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Largest LU this provider creates, in MiB. Memory is only used for what is written (see
/// the store), but the bookkeeping is sized by the capacity.
pub const MAX_SIZE_MB: u64 = 64 * 1024;

/// Version of the saved configuration format.
const CONFIG_VERSION: u32 = 1;

/// The definition of one LU: what `list-lu` shows and what the configuration saves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LuDef {
    /// GUID, 32 upper-case hex digits.
    pub guid: String,
    /// Alias shown by `stmfadm list-lu`.
    #[serde(default)]
    pub alias: String,
    /// Capacity in MiB.
    pub size_mb: u64,
    /// Logical block size in bytes: 512 or 4096.
    pub block_size: u32,
}

/// The saved configuration: the LU definitions.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedConfig {
    version: u32,
    lus: Vec<LuDef>,
}

/// A management request (the JSON `op` field selects the variant).
#[derive(Debug, Deserialize)]
#[serde(tag = "op", deny_unknown_fields)]
enum Request {
    #[serde(rename = "create-lu")]
    Create {
        size_mb: u64,
        #[serde(default)]
        alias: String,
        guid: Option<String>,
        block_size: Option<u32>,
    },
    #[serde(rename = "delete-lu")]
    Delete { guid: String },
    #[serde(rename = "list-lu")]
    List,
}

/// An LU registered with the core.
struct Registered {
    def: LuDef,
    handle: LuHandle,
}

/// The provider instance: the LUs it serves, by GUID.
pub struct RamProvider {
    host: Host,
    lus: Mutex<BTreeMap<guid::Guid, Registered>>,
}

impl RamProvider {
    /// Validates `def`, builds the LU and registers it with the core.
    fn add_lu(&self, def: LuDef) -> Result<LuDef, String> {
        let guid = guid::parse(&def.guid)?;
        if def.size_mb == 0 || def.size_mb > MAX_SIZE_MB {
            return Err(format!(
                "size_mb must be between 1 and {MAX_SIZE_MB}, not {}",
                def.size_mb
            ));
        }
        if def.block_size != 512 && def.block_size != 4096 {
            return Err(format!(
                "block_size must be 512 or 4096, not {}",
                def.block_size
            ));
        }
        if def.alias.len() > 255 {
            return Err("alias is longer than 255 bytes".into());
        }
        let def = LuDef {
            guid: guid::to_hex(&guid),
            ..def
        };
        if self
            .lus
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&guid)
        {
            return Err(format!("LU {} exists already", def.guid));
        }
        let lu = Arc::new(RamLu::new(guid, def.size_mb << 20, def.block_size));
        // The core starts the LU offline and brings it online (calling `Lu::ctl`); a view
        // entry (stmfadm add-view) makes it visible to initiators. Our lock is not held
        // across the call: the core may call back into the provider. (It refuses a GUID that
        // is registered already, so two racing creates cannot both succeed.)
        let handle = self
            .host
            .register_lu(guid, &def.alias, lu)
            .map_err(|st| format!("the core refused LU {}: {st}", def.guid))?;
        tracing::info!(guid = %def.guid, size_mb = def.size_mb, block_size = def.block_size, "RAM LU created");
        let reg = Registered {
            def: def.clone(),
            handle,
        };
        self.lus
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(guid, reg);
        Ok(def)
    }

    /// Deregisters an LU: the core takes it offline (aborting its tasks) and releases it.
    fn delete_lu(&self, guid_text: &str) -> Result<String, String> {
        let guid = guid::parse(guid_text)?;
        // Take the entry out first and call the core without holding our lock: the core
        // calls back into the LU while it offlines it.
        let removed = self
            .lus
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&guid);
        let Some(reg) = removed else {
            return Err(format!(
                "no LU {} in provider {}",
                guid::to_hex(&guid),
                Self::NAME
            ));
        };
        let status = self.host.deregister_lu(reg.handle);
        if status != Status::SUCCESS {
            let msg = format!("cannot delete LU {}: {status}", reg.def.guid);
            self.lus
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(guid, reg);
            return Err(msg);
        }
        tracing::info!(guid = %reg.def.guid, "RAM LU deleted");
        Ok(reg.def.guid)
    }

    fn defs(&self) -> Vec<LuDef> {
        self.lus
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|r| r.def.clone())
            .collect()
    }
}

impl Provider for RamProvider {
    const NAME: &'static str = "example-ram-lu";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Example LU provider: RAM disks (contents are not persistent)";
    const KIND: ProviderKind = ProviderKind::LU;

    fn create(ctx: ProviderContext, config: &str) -> Result<Self, String> {
        let provider = RamProvider {
            host: ctx.host(),
            lus: Mutex::new(BTreeMap::new()),
        };
        if config.trim().is_empty() {
            return Ok(provider); // first start: no LUs yet
        }
        let saved: SavedConfig = serde_json::from_str(config)
            .map_err(|e| format!("{}: invalid saved configuration: {e}", Self::NAME))?;
        if saved.version != CONFIG_VERSION {
            return Err(format!(
                "{}: saved configuration has version {}, this provider reads version {CONFIG_VERSION}",
                Self::NAME,
                saved.version
            ));
        }
        for def in saved.lus {
            let guid = def.guid.clone();
            if let Err(e) = provider.add_lu(def) {
                // Refuse the whole load rather than silently dropping an LU; undo the rest.
                provider.shutdown();
                return Err(format!("{}: cannot restore LU {guid}: {e}", Self::NAME));
            }
        }
        Ok(provider)
    }

    fn control(&self, request: &str) -> Result<String, String> {
        let request: Request = serde_json::from_str(request)
            .map_err(|e| format!("{}: invalid request: {e}", Self::NAME))?;
        let reply = match request {
            Request::Create {
                size_mb,
                alias,
                guid,
                block_size,
            } => {
                let guid = match guid {
                    Some(g) => g,
                    None => guid::to_hex(&guid::generate()),
                };
                let def = self.add_lu(LuDef {
                    guid,
                    alias,
                    size_mb,
                    block_size: block_size.unwrap_or(512),
                })?;
                serde_json::json!({ "guid": def.guid })
            }
            Request::Delete { guid } => serde_json::json!({ "deleted": self.delete_lu(&guid)? }),
            Request::List => serde_json::json!({ "lus": self.defs() }),
        };
        Ok(reply.to_string())
    }

    fn save_config(&self) -> String {
        let saved = SavedConfig {
            version: CONFIG_VERSION,
            lus: self.defs(),
        };
        serde_json::to_string(&saved).unwrap_or_default()
    }

    fn shutdown(&self) {
        // Normally the core has deregistered every LU before destroying the provider; this
        // catches the rest.
        let lus = std::mem::take(&mut *self.lus.lock().unwrap_or_else(PoisonError::into_inner));
        for reg in lus.into_values() {
            let _ = self.host.deregister_lu(reg.handle);
        }
    }
}

plugins_sdk::export_provider!(RamProvider);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        let r: Request = serde_json::from_str(r#"{"op":"create-lu","size_mb":4}"#).unwrap();
        assert!(matches!(
            r,
            Request::Create {
                size_mb: 4,
                guid: None,
                block_size: None,
                ..
            }
        ));
        let r: Request = serde_json::from_str(r#"{"op":"list-lu"}"#).unwrap();
        assert!(matches!(r, Request::List));
        assert!(
            serde_json::from_str::<Request>(r#"{"op":"create-lu","size_mb":4,"colour":1}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"format"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"create-lu","size_mb":-1}"#).is_err());
    }
}
