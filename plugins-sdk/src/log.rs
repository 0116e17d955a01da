//! The tracing bridge: a provider library has its own copy of `tracing`'s globals, so the
//! SDK installs a subscriber in it that forwards every event to the core's `log` entry, where
//! it is re-emitted on the daemon's subscriber.

use crate::abi::{LogLevel, RStr};
use crate::host::Host;
use std::fmt::Write as _;
use std::sync::OnceLock;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

static INSTALLED: OnceLock<()> = OnceLock::new();

/// Installs the bridge as this library's global subscriber (once per library image). When the
/// provider is linked into the same image as the core, the core's subscriber is already global
/// and this quietly does nothing; if the core has none either, the core's `log` entry drops
/// the re-entrant events, so nothing loops.
pub(crate) fn install_bridge(host: Host) {
    if tracing::dispatcher::has_been_set() {
        return;
    }
    if INSTALLED.set(()).is_ok() {
        // SAFETY: the table is the core's, valid while the provider is loaded.
        let max = unsafe { (host.api().max_log_level)() };
        let _ = tracing::subscriber::set_global_default(Bridge {
            host,
            max: to_filter(max),
        });
    }
}

fn to_filter(l: LogLevel) -> LevelFilter {
    match l.0 {
        0 => LevelFilter::OFF,
        1 => LevelFilter::ERROR,
        2 => LevelFilter::WARN,
        3 => LevelFilter::INFO,
        4 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

fn to_level(l: &Level) -> LogLevel {
    match *l {
        Level::ERROR => LogLevel::ERROR,
        Level::WARN => LogLevel::WARN,
        Level::INFO => LogLevel::INFO,
        Level::DEBUG => LogLevel::DEBUG,
        _ => LogLevel::TRACE,
    }
}

struct Bridge {
    host: Host,
    max: LevelFilter,
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            if self.0.is_empty() {
                let _ = write!(self.0, "{value:?}");
            } else {
                let s = std::mem::take(&mut self.0);
                let _ = write!(self.0, "{value:?} {s}");
            }
        } else {
            let _ = write!(
                self.0,
                "{}{}={:?}",
                if self.0.is_empty() { "" } else { " " },
                field.name(),
                value
            );
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            let _ = write!(
                self.0,
                "{}{}={}",
                if self.0.is_empty() { "" } else { " " },
                field.name(),
                value
            );
        }
    }
}

impl Subscriber for Bridge {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.max
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let meta = event.metadata();
        let mut msg = Message(String::new());
        event.record(&mut msg);
        // SAFETY: the table is valid while the provider is loaded; strings live for the call.
        unsafe {
            (self.host.api().log)(
                self.host.token(),
                to_level(meta.level()),
                RStr::new(meta.target()),
                RStr::new(&msg.0),
            )
        }
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}
