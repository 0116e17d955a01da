//! iscsit: the iSCSI target port provider.
//!
//! The login, authentication and discovery logic is sans-IO (PDUs and bytes in,
//! PDUs out; no sockets, no clock), after `rustls`:
//!
//! - [`names`]: iSCSI name validation and normalization (RFC 7143 §4.2.7, RFC 3722).
//! - [`config`]: targets, target portal groups, initiator contexts, defaults.
//! - [`limits`]: the resource budget (memory, commands, connections, time).
//! - [`chap`]: CHAP with MD5, target and initiator sides, one-way and mutual.
//! - [`auth`]: what a login proved about its name, and the throttle on failed CHAP.
//! - [`login`]: the target's login state machine (security and operational
//!   stages as types), producing Login Response PDUs and a [`login::LoginOutcome`].
//! - [`discovery`]: SendTargets and multi-PDU Text Responses.

pub mod auth;
pub use idm::chap;
pub mod config;
pub mod discovery;
pub mod limits;
pub mod login;
pub mod names;

// The run time (connections, sessions, the port entry points) and the provider.
//
// - [`ffp`]: full feature phase rules without I/O (CmdSN window, TMF codes, SCSI Response).
// - [`runtime`]: event loops, connections, sessions, targets, the buffer store.
// - [`provider`]: `Provider` (create, control for itadm, save_config).
pub mod ffp;
pub mod provider;
pub mod runtime;

plugins_sdk::export_provider!(provider::IscsitProvider);
