//! A port that completes everything at once, for measuring the core alone (the task-path
//! benchmark and the no-allocation test share it).

use plugins_sdk::abi::task_attr;
use plugins_sdk::{
    AbortOutcome, DataBuf, Host, LportHandle, Port, Provider, ProviderContext, ProviderKind,
    SessionHandle, Status, TaskHandle, TaskSpec, TmFunction,
};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use stmf::{Settings, Stmf};

/// Statuses the port has seen.
pub static DONE: AtomicU64 = AtomicU64::new(0);
static PORT: OnceLock<(Host, LportHandle)> = OnceLock::new();

struct NullPort;

impl Port for NullPort {
    fn xfer_data(&self, host: &Host, task: &TaskHandle, buf: DataBuf, _flags: u32) {
        host.data_xfer_done(task, buf, Status::SUCCESS);
    }
    fn send_status(&self, host: &Host, task: &TaskHandle, _flags: u32) {
        DONE.fetch_add(1, Relaxed);
        host.send_status_done(task, Status::SUCCESS);
    }
    fn abort(&self, _host: &Host, _task: &TaskHandle) -> AbortOutcome {
        AbortOutcome::Done
    }
    fn dbuf_alloc(&self, _task: &TaskHandle, _size: u32, _min: u32) -> Result<DataBuf, u32> {
        Err(0)
    }
    fn dbuf_free(&self, _buf: DataBuf) {}
}

struct NullPortProvider;

impl Provider for NullPortProvider {
    const NAME: &'static str = "null-port";
    const VERSION: &'static str = "0";
    const DESCRIPTION: &'static str = "port that completes everything at once";
    const KIND: ProviderKind = ProviderKind::PORT;
    fn create(ctx: ProviderContext, _config: &str) -> Result<Self, String> {
        let host = ctx.host();
        let lp = host
            .register_lport("null.port", "", "test", Arc::new(NullPort))
            .map_err(|e| e.to_string())?;
        let _ = PORT.set((host, lp));
        Ok(NullPortProvider)
    }
}

/// `lib<name>.so` in the target directory of the running test or bench binary.
pub fn provider_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let p = dir.join(format!("lib{name}.so"));
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --workspace` (or with --release for benches) first",
        p.display()
    );
    p
}

/// A core with the null-lu dylib mapped at LUN 0 and the null port with one session.
pub struct NullSetup {
    pub stmf: Stmf,
    pub host: Host,
    pub session: SessionHandle,
}

impl NullSetup {
    pub fn new() -> NullSetup {
        let stmf = Stmf::new(Settings::default());
        stmf.load_provider(&provider_path("null_lu"), "")
            .expect("load null-lu");
        let root: &'static _ = Box::leak(Box::new(plugins_sdk::root_module::<NullPortProvider>()));
        stmf.register_builtin_provider(root, "")
            .expect("register port");
        let guid = "600144F000000000000000000000AA01".parse().expect("guid");
        stmf.add_view(guid, None, None, Some(0)).expect("view");
        let (host, lp) = *PORT.get().expect("port registered");
        let session = host
            .register_session(lp, "iqn.2026-11.org.rstmf:null", "", "")
            .expect("session");
        NullSetup {
            stmf,
            host,
            session,
        }
    }

    /// One TEST UNIT READY through the whole path.
    #[inline]
    pub fn task(&self, tag: u64) {
        const TUR: [u8; 6] = [0; 6];
        let spec = TaskSpec {
            task_attr: task_attr::SIMPLE,
            tm_function: TmFunction::NONE,
            ..TaskSpec::command([0; 8], &TUR, tag)
        };
        let t = self
            .host
            .task_alloc(self.session, &spec, std::ptr::null_mut())
            .expect("task_alloc");
        self.host.post_task(t, None);
    }
}
