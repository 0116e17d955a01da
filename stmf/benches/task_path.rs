//! Task path through the ABI: a null port (in this process) submits commands to a null LU
//! loaded as a shared library (`tests/fixtures/null-lu`), one thread, and the core routes
//! each one: task_alloc → post_task → LU new_task → send_status → port send_status →
//! send_status_done → task freed. Reports tasks per second.
//!
//! Run: `cargo build --release -p null-lu && cargo bench -p stmf --bench task_path`

use plugins_sdk::abi::task_attr;
use plugins_sdk::{
    AbortOutcome, DataBuf, Host, LportHandle, Port, Provider, ProviderContext, ProviderKind, SessionHandle, Status, TaskHandle, TaskSpec, TmFunction,
};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use stmf::{Settings, Stmf};

/// Counts completed statuses.
static DONE: AtomicU64 = AtomicU64::new(0);
static PORT: OnceLock<(Host, LportHandle)> = OnceLock::new();

struct NullPort;

impl Port for NullPort {
    fn xfer_data(&self, host: &Host, task: TaskHandle, buf: DataBuf, _flags: u32) {
        host.data_xfer_done(task, buf, Status::SUCCESS);
    }
    fn send_status(&self, host: &Host, task: TaskHandle, _flags: u32) {
        DONE.fetch_add(1, Relaxed);
        host.send_status_done(task, Status::SUCCESS);
    }
    fn abort(&self, _host: &Host, _task: TaskHandle) -> AbortOutcome {
        AbortOutcome::Done
    }
    fn dbuf_alloc(&self, _task: TaskHandle, _size: u32, _min: u32) -> Result<DataBuf, u32> {
        Err(0)
    }
    fn dbuf_free(&self, _buf: DataBuf) {}
}

struct NullPortProvider;

impl Provider for NullPortProvider {
    const NAME: &'static str = "bench-null-port";
    const VERSION: &'static str = "0";
    const DESCRIPTION: &'static str = "benchmark port";
    const KIND: ProviderKind = ProviderKind::PORT;
    fn create(ctx: ProviderContext, _config: &str) -> Result<Self, String> {
        let host = ctx.host();
        let lp = host.register_lport("bench.null.port", "", "test", Arc::new(NullPort)).map_err(|e| e.to_string())?;
        let _ = PORT.set((host, lp));
        Ok(NullPortProvider)
    }
}

fn null_lu_path() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let p = dir.join("libnull_lu.so");
    assert!(p.is_file(), "{} is missing: run `cargo build --release -p null-lu` first", p.display());
    p
}

struct Bench {
    _stmf: Stmf,
    host: Host,
    session: SessionHandle,
}

fn setup() -> Bench {
    let stmf = Stmf::new(Settings::default());
    stmf.load_provider(&null_lu_path(), "").expect("load null-lu");
    let root: &'static _ = Box::leak(Box::new(plugins_sdk::root_module::<NullPortProvider>()));
    stmf.register_builtin_provider(root, "").expect("register port");
    let guid = "600144F000000000000000000000AA01".parse().expect("guid");
    stmf.add_view(guid, None, None, Some(0)).expect("view");
    let (host, lp) = *PORT.get().expect("port registered");
    let session = host.register_session(lp, "iqn.2026-11.org.rstmf:bench", "", "").expect("session");
    Bench { _stmf: stmf, host, session }
}

const TUR: [u8; 6] = [0; 6];

#[inline]
fn one_task(b: &Bench, tag: u64) {
    let spec = TaskSpec { task_attr: task_attr::SIMPLE, tm_function: TmFunction::NONE, ..TaskSpec::command([0; 8], &TUR, tag) };
    let t = b.host.task_alloc(b.session, &spec, std::ptr::null_mut()).expect("task_alloc");
    b.host.post_task(t, None);
}

fn main() {
    divan::main();
}

/// One TEST UNIT READY through port → core → LU (dylib) → core → port.
#[divan::bench(min_time = 2)]
fn null_task(bencher: divan::Bencher) {
    let b = setup();
    // Warm the pool and the caches.
    for i in 0..10_000 {
        one_task(&b, i);
    }
    let mut tag = 0u64;
    bencher.counter(divan::counter::ItemsCount::new(1usize)).bench_local(|| {
        tag += 1;
        one_task(&b, tag);
    });
    assert!(DONE.load(Relaxed) > 10_000, "tasks did not complete");
}
