//! An iSCSI initiator: the initiator role of `idm`'s sans-IO codec and connection
//! state machine, plus a thin blocking driver.
//!
//! - [`url`]: `iscsi://[user%secret@]host[:port]/iqn/lun` URLs and portals.
//! - [`core`]: [`SessionCore`], the sans-IO session (login, discovery, SCSI commands
//!   with CmdSN/StatSN accounting, immediate/unsolicited data, R2T, Data-In, TMF,
//!   NOP, logout). No sockets, no clock: tests drive it with golden PDUs.
//! - [`session`]: [`Session`], the core over a non-blocking TCP socket (`mio`), with
//!   blocking helpers (`login`, `read`, `write`, `scsi`, `discover`) and a submit/poll
//!   API for queue depth.
//! - [`scsi`]: CDB builders, status codes, sense and capacity parsing.
//! - [`auth`]: the security-stage hook and CHAP ([`ChapProvider`], on `idm::chap`).
//!
//! ```no_run
//! use iscsi_initiator::{IscsiUrl, LoginOptions, Session};
//! let url: IscsiUrl = "iscsi://127.0.0.1:3260/iqn.2026-11.org.example:tgt/1".parse()?;
//! let mut s = Session::login(&url, &LoginOptions::default())?;
//! let cap = s.read_capacity()?;
//! s.write(0, &vec![0xa5; cap.block_size as usize])?;
//! let back = s.read(0, 1)?;
//! assert!(back.iter().all(|&b| b == 0xa5));
//! s.logout()?;
//! # Ok::<(), iscsi_initiator::Error>(())
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod core;
pub mod error;
pub mod scsi;
pub mod session;
pub mod url;

pub use crate::auth::{AuthError, AuthProvider, AuthStep, Authenticator, ChapProvider};
pub use crate::core::{
    parse_send_targets, AsyncNotice, DigestMode, DiscoveredTarget, Event, LoginOptions, Residual,
    ScsiRequest, ScsiResult, SessionConfig, SessionCore, SessionKind, TargetPortal, TaskId,
};
pub use crate::error::{Error, ProtocolError, TaskError};
pub use crate::scsi::{Capacity, Sense};
pub use crate::session::{Completion, Session};
pub use crate::url::{Credentials, Host, IscsiUrl, Portal, UrlError};
