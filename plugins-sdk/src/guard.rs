//! Panic containment at the ABI boundary.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `f`, catching a panic so it never unwinds across the library boundary.
///
/// Returns `Err(message)` when `f` panicked; the message is also logged at error level with
/// `what` naming the entry point. Every shim of this crate uses it; use it yourself around
/// callbacks you hand to foreign code.
pub fn guard<R>(what: &str, f: impl FnOnce() -> R) -> Result<R, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => Ok(r),
        Err(payload) => {
            let msg = panic_message(&*payload);
            tracing::error!(entry = what, "provider panicked: {msg}");
            Err(msg)
        }
    }
}

/// The text of a panic payload (`&str` or `String`), or a placeholder.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
