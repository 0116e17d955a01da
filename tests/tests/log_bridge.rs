//! Provider logs reach the daemon's subscriber: a provider library has its own copy of
//! `tracing`'s globals, and the SDK bridges its events into the core's subscriber.

use rstmf_tests::Harness;
use std::io::Write;
use std::sync::{Arc, Mutex};
use stmf::Settings;

/// A writer into a shared buffer: what the "daemon's" subscriber printed.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn provider_events_reach_the_core_subscriber() {
    let cap = Capture::default();
    let writer = cap.clone();
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let h = Harness::new(Settings::default());
    h.load("example-ram-lu");
    let guid = h.create_ram_lu(4, 512);

    let text =
        String::from_utf8_lossy(&cap.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("RAM LU created"))
        .unwrap_or_else(|| {
            panic!("the provider's event did not reach the subscriber; it printed:\n{text}")
        });
    assert!(line.contains("provider=example-ram-lu"), "{line}");
    assert!(
        line.contains(&guid.to_string()),
        "fields travel with the message: {line}"
    );
    assert!(line.contains("INFO"), "{line}");
}
