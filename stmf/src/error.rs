//! Errors of the core's management operations.

use serde::{Deserialize, Serialize};

/// Kinds of failure, stable strings on the control protocol (`error.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The named object does not exist.
    NotFound,
    /// It exists already.
    AlreadyExists,
    /// An argument is malformed or out of range.
    InvalidArgument,
    /// The object is busy or in use (sessions, online objects, members).
    Busy,
    /// The object's state does not allow the operation.
    BadState,
    /// A provider library was refused (missing, malformed, incompatible ABI).
    ProviderLoad,
    /// A provider failed the request or timed out.
    Provider,
    /// An operation timed out (the stuck object has been offlined).
    Timeout,
    /// A view entry conflicts with another.
    Conflict,
    /// Malformed request on the control protocol.
    Protocol,
    /// I/O error (config store, socket).
    Io,
    /// Internal error.
    Internal,
}

/// Error of a management operation.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct StmfError {
    /// Kind.
    pub kind: ErrorKind,
    /// Human-readable message (names the object and the reason).
    pub message: String,
}

impl StmfError {
    /// Builds an error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        StmfError {
            kind,
            message: message.into(),
        }
    }
    /// NotFound.
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, m)
    }
    /// AlreadyExists.
    pub fn exists(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, m)
    }
    /// InvalidArgument.
    pub fn invalid(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, m)
    }
    /// Busy.
    pub fn busy(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Busy, m)
    }
}

/// Result of a management operation.
pub type Result<T> = std::result::Result<T, StmfError>;
