//! # plugins-sdk: the stable provider ABI of rstmf
//!
//! rstmf's core (`stmf`) loads **providers** — shared libraries — at run time: *port
//! providers* bring SCSI commands in from a transport (iSCSI, iSER), *LU providers* execute
//! them against storage. This crate is everything a provider depends on:
//!
//! * [`abi`]: the raw `#[repr(C)]` contract (root module, entry-point tables, host services,
//!   task and data-buffer structs), checked by the core at load time through [`layout`].
//! * Safe wrappers: implement [`Provider`] (and [`Lu`] or [`Port`] for your objects), export
//!   it with [`export_provider!`], and call the core through [`Host`]. Every entry point is
//!   wrapped so a panic never unwinds into the core: it is reported as
//!   [`abi::Status::PANICKED`] and the core fails the provider's objects.
//! * [`scsi`]: CDB decoding with bounds checks, sense builders, status and sense codes.
//! * A tracing bridge: `tracing` events of a provider reach the daemon's subscriber.
//!
//! ## Task flow
//! ```text
//! port: task_alloc ─ post_task ─▶ core ─ new_task ─▶ LU
//! LU:   dbuf_alloc (port's store) ─ xfer_data ─▶ core ─▶ port moves data ─ data_xfer_done
//!       ◀─ dbuf_xfer_done ─ core ◀──────────────────────────────────────┘
//! LU:   send_status(LU_DONE) ─▶ core ─ send_status ─▶ port ─ send_status_done ─▶ core
//! core: task_free ─▶ port (and LU), task returns to the session's pool
//! ```
//!
//! ## Task ownership
//! [`Host::task_alloc`] returns an [`UnpostedTask`], which [`Host::post_task`] consumes (so a
//! task is posted once). Entry points receive a borrowed `&TaskHandle`; a provider that
//! finishes a task later keeps a clone. [`TaskHandle`] is reference-counted like an `Arc`:
//! the core frees a task's memory only after its `task_free` *and* the last handle, so a
//! handle kept too long reads stale values, never freed memory, and the core refuses calls
//! made with a dead task. [`TaskId`] is the task's identity for maps.
//!
//! See `docs/abi.md` and the example provider `example-ram-lu` for a complete LU.
#![warn(missing_docs)]

pub mod abi;
pub mod fields;
mod guard;
mod host;
pub mod layout;
mod log;
mod lu;
mod port;
mod provider;
pub mod scsi;
mod task;

pub use abi::{
    CtlCmd, LogLevel, LportHandle, LuEvent, LuHandle, ProviderKind, ProviderToken, SessionHandle,
    Status, TmFunction, TmResponse,
};
pub use guard::{guard, panic_message};
pub use host::{Host, ReplySink, SessionDetails};
pub use lu::{AbortOutcome, Lu};
pub use port::Port;
pub use provider::{root_module, Provider, ProviderContext};
pub use task::{DataBuf, SenseBytes, TaskHandle, TaskId, TaskSpec, UnpostedTask};

/// Hidden re-exports for [`export_provider!`].
#[doc(hidden)]
pub mod __private {
    pub use crate::provider::root_module;
}
