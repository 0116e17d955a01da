//! # stmf: the rstmf core
//!
//! The core loads providers (shared libraries built against `plugins-sdk`), keeps the
//! registries of LUs, local ports and sessions, maps LUNs through host groups, target groups
//! and views, routes every SCSI task from its port to its LU and back, coordinates task
//! management, and runs the online/offline handshake. `stmfd` wraps it in a daemon with a
//! control socket; `stmfadm` is the admin's client.
//!
//! Module map, following a command: [`host`](crate) (the table providers call) →
//! `route` (task path) → `default_lu` (commands the core answers) / `tm` (task management,
//! aborts, timeouts); objects live in `objects` and `session`; access control in [`view`].

#![deny(unsafe_op_in_unsafe_fn)]

pub mod cli;
pub mod config;
pub mod control;
mod core;
mod default_lu;
pub mod error;
mod host;
mod loader;
mod objects;
mod route;
mod session;
pub mod stats;
mod task;
mod tm;
pub mod trust;
pub mod types;
pub mod view;

pub use crate::core::Stmf;
pub use error::{ErrorKind, Result, StmfError};
pub use route::MAX_TASKS_PER_SESSION;
pub use types::*;
