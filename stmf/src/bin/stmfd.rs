//! stmfd: the rstmf daemon. Owns the core, restores the saved configuration, and serves the
//! control protocol (`docs/control-protocol.md`) on a Unix socket.

use anyhow::{bail, Context};
use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::fs::{self, DirBuilder, File};
use std::io::{BufReader, IsTerminal};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use stmf::config::{ConfigStore, PersistedConfig};
use stmf::control::{self, DEFAULT_SOCKET};
use stmf::{Guid, Settings, Stmf};
use tracing_subscriber::EnvFilter;

/// The rstmf daemon: loads providers, restores LUs, targets, groups and views, and serves
/// stmfadm, sbdadm and itadm on its control socket.
#[derive(Parser, Debug)]
#[command(name = "stmfd", version)]
struct Opts {
    /// Directory of the persisted configuration (stmf.json).
    #[arg(
        long,
        env = "STMFD_STATE_DIR",
        default_value = "/var/lib/rstmf",
        value_name = "DIR"
    )]
    state_dir: PathBuf,
    /// Control socket (created with mode 0600).
    #[arg(long, env = "STMF_SOCKET", default_value = DEFAULT_SOCKET, value_name = "PATH")]
    socket: PathBuf,
    /// Where the embedded default looks for libsbd.so and libiscsit.so
    /// [default: the directory of the stmfd executable].
    #[arg(long, env = "STMFD_PROVIDERS_DIR", value_name = "DIR")]
    providers_dir: Option<PathBuf>,
    /// How long a provider may take to complete an abort before its object is offlined
    /// (overrides the saved setting).
    #[arg(long, value_name = "MS")]
    abort_timeout_ms: Option<u64>,
    /// Log filter (tracing EnvFilter syntax, e.g. `info` or `stmf=debug`) [default: $RUST_LOG or info].
    #[arg(long, value_name = "LEVEL")]
    log: Option<String>,
}

fn main() -> ExitCode {
    let opts = Opts::parse();
    if let Err(e) = init_logging(opts.log.as_deref()) {
        eprintln!("stmfd: {e:#}");
        return ExitCode::from(2);
    }
    match run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stmfd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: Option<&str>) -> anyhow::Result<()> {
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).with_context(|| format!("invalid --log {l:?}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
    Ok(())
}

fn run(opts: Opts) -> anyhow::Result<()> {
    create_private_dir(&opts.state_dir)
        .with_context(|| format!("state dir {}", opts.state_dir.display()))?;
    let _lock = lock_state_dir(&opts.state_dir)?;
    let store = Arc::new(ConfigStore::new(&opts.state_dir));
    let saved = store.load().context("refusing to start")?;

    // Claim the socket before loading anything; serve it once the configuration is restored.
    let (listener, socket_file) = bind_socket(&opts.socket)?;
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("installing signal handlers")?;

    let mut settings = saved
        .as_ref()
        .map(|c| c.settings.clone())
        .unwrap_or_else(Settings::default);
    if let Some(ms) = opts.abort_timeout_ms {
        settings.abort_timeout_ms = ms;
    }
    let stmf = Stmf::new(settings);
    println!("state dir: {}", opts.state_dir.display());
    println!("socket: {}", opts.socket.display());
    match &saved {
        Some(cfg) => restore(&stmf, &store, cfg),
        None => {
            let dir = match opts.providers_dir.clone() {
                Some(d) => d,
                None => exe_dir()?,
            };
            match embedded_default(&stmf, &dir) {
                Ok(url) => {
                    if let Err(e) = store.save(&stmf) {
                        tracing::error!("cannot save the embedded default: {e}");
                    }
                    println!("{url}");
                }
                Err(why) => println!("embedded default unavailable: {why}"),
            }
        }
    }
    stmf.set_config_initialized();
    print_providers(&stmf, &store);

    let stop = Arc::new(AtomicBool::new(false));
    let waker = listener.try_clone().context("cloning the control socket")?;
    let acceptor = {
        let (stmf, store, stop) = (stmf.clone(), store.clone(), stop.clone());
        thread::Builder::new()
            .name("stmfd-accept".into())
            .spawn(move || accept_loop(listener, stmf, store, stop))
            .context("starting the acceptor thread")?
    };
    tracing::info!("serving on {}", opts.socket.display());

    let sig = signals.forever().next();
    tracing::info!("signal {sig:?}: shutting down");
    stop.store(true, Ordering::SeqCst);
    // Wake the acceptor without needing the socket path (it may have been removed): shutting
    // the listening socket down makes the blocked accept() fail.
    // SAFETY: our own listening socket, open for as long as `waker` lives.
    unsafe { libc::shutdown(waker.as_raw_fd(), libc::SHUT_RDWR) };
    if acceptor.join().is_err() {
        tracing::error!("acceptor thread panicked");
    }
    // Save before shutdown: shutdown takes every object offline and destroys the providers.
    let saved_ok = store.close(&stmf);
    stmf.shutdown();
    drop(socket_file); // removes the socket
    saved_ok.with_context(|| format!("saving {} at shutdown", store.path().display()))?;
    tracing::info!("stopped");
    Ok(())
}

fn exe_dir() -> anyhow::Result<PathBuf> {
    let exe =
        std::env::current_exe().context("locating the stmfd executable (use --providers-dir)")?;
    Ok(exe.parent().map(Path::to_path_buf).unwrap_or_default())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Holds an exclusive lock on `<state-dir>/.stmfd.lock` so two daemons never share a state dir.
fn lock_state_dir(dir: &Path) -> anyhow::Result<File> {
    let path = dir.join(".stmfd.lock");
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is passed.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            bail!("another stmfd is using the state dir {}", dir.display());
        }
        return Err(e).with_context(|| format!("locking {}", path.display()));
    }
    Ok(f)
}

/// Creates the control socket with mode 0600 (and its directory, 0700, if missing). A socket
/// file nobody answers on is stale and replaced; one that answers means another stmfd.
fn bind_socket(path: &Path) -> anyhow::Result<(UnixListener, SocketFile)> {
    let shown = path.display();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            create_private_dir(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
    }
    match fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            bail!("{shown} exists and is not a socket; refusing to replace it")
        }
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => bail!("another stmfd is already serving {shown}"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                fs::remove_file(path).with_context(|| format!("removing stale socket {shown}"))?;
                tracing::info!("removed stale socket {shown}");
            }
            Err(e) => return Err(e).with_context(|| format!("probing existing socket {shown}")),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("{shown}")),
    }
    // SAFETY: umask only changes the process's file creation mask; restored right after.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = bound.with_context(|| format!("binding {shown}"))?;
    let file = SocketFile::new(path);
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {shown}"))?;
    Ok((listener, file))
}

/// The socket file this daemon created; removed on drop if it is still the same file.
struct SocketFile {
    path: PathBuf,
    id: Option<(u64, u64)>,
}

impl SocketFile {
    fn new(path: &Path) -> Self {
        let id = fs::symlink_metadata(path).map(|m| (m.dev(), m.ino())).ok();
        SocketFile {
            path: path.to_owned(),
            id,
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let current = fs::symlink_metadata(&self.path)
            .map(|m| (m.dev(), m.ino()))
            .ok();
        if current.is_some() && current == self.id {
            if let Err(e) = fs::remove_file(&self.path) {
                tracing::warn!("removing {}: {e}", self.path.display());
            }
        }
    }
}

fn accept_loop(listener: UnixListener, stmf: Stmf, store: Arc<ConfigStore>, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accept: {e}");
                thread::sleep(std::time::Duration::from_millis(50)); // e.g. out of descriptors
                continue;
            }
        };
        let (stmf, store) = (stmf.clone(), store.clone());
        let spawned = thread::Builder::new()
            .name("stmfd-client".into())
            .spawn(move || {
                let reader = match stream.try_clone() {
                    Ok(s) => BufReader::new(s),
                    Err(e) => return tracing::warn!("client connection: {e}"),
                };
                if let Err(e) = control::serve_connection(&stmf, &store, reader, &stream) {
                    tracing::debug!("client connection: {e}");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start a client thread: {e}");
        }
    }
}

/// Loads the saved providers (a failure is logged and the entry kept), then groups and views.
fn restore(stmf: &Stmf, store: &ConfigStore, cfg: &PersistedConfig) {
    for p in &cfg.providers {
        match stmf.load_provider(Path::new(&p.path), &p.config_string()) {
            Ok(info) if info.name != p.name => {
                tracing::warn!(
                    "{} was saved as provider {} but now calls itself {}",
                    p.path,
                    p.name,
                    info.name
                )
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(provider = %p.name, path = %p.path, "provider not loaded: {e}");
                store.retain_provider(p.clone(), e.message);
            }
        }
    }
    if let Err(e) = stmf.import_config(&cfg.core) {
        // Keep a copy: the next save writes the running state, which lacks what failed.
        let backup = store.path().with_extension("json.import-failed");
        match fs::copy(store.path(), &backup) {
            Ok(_) => tracing::error!(
                "restoring groups and views: {e}; the saved file is kept as {}",
                backup.display()
            ),
            Err(ce) => tracing::error!(
                "restoring groups and views: {e}; copying to {} failed: {ce}",
                backup.display()
            ),
        }
    }
}

fn print_providers(stmf: &Stmf, store: &ConfigStore) {
    let loaded = stmf.list_providers();
    let retained = store.retained_providers();
    if loaded.is_empty() && retained.is_empty() {
        println!("providers: none");
    }
    for p in loaded {
        println!(
            "provider: {} {} ({}) from {}",
            p.name, p.version, p.kind, p.path
        );
    }
    for r in retained {
        println!(
            "provider: {} NOT LOADED from {}: {}",
            r.entry.name, r.entry.path, r.reason
        );
    }
}

const DEFAULT_TARGET: &str = "iqn.2026-11.org.rstmf:default";
const DEFAULT_PORTAL: &str = "127.0.0.1:3260";
/// Size of the embedded default's RAM LU, in bytes.
const DEFAULT_LU_SIZE: u64 = 64 << 20;

/// What the embedded default made so far, to undo it when a later step fails (adding the
/// view is the last step, so it never needs undoing).
#[derive(Default)]
struct DefaultProgress {
    providers: Vec<String>,
    lu: Option<(String, Guid)>,
    target: Option<String>,
}

/// With no configuration at all: a RAM LU exported by one iSCSI target on 127.0.0.1:3260.
/// Returns the URL to print, or why it is not available (after undoing what was made).
fn embedded_default(stmf: &Stmf, dir: &Path) -> Result<String, String> {
    let mut done = DefaultProgress::default();
    let r = make_default(stmf, dir, &mut done);
    if r.is_err() {
        undo_default(stmf, done);
    }
    r
}

fn make_default(stmf: &Stmf, dir: &Path, done: &mut DefaultProgress) -> Result<String, String> {
    let libs = ["libsbd.so", "libiscsit.so"].map(|l| dir.join(l));
    if let Some(missing) = libs.iter().find(|p| !p.is_file()) {
        return Err(format!(
            "{} not found (set --providers-dir)",
            missing.display()
        ));
    }
    let mut names = Vec::new();
    for lib in &libs {
        let info = stmf.load_provider(lib, "").map_err(|e| e.message)?; // names the file
        done.providers.push(info.name.clone());
        names.push(info.name);
    }
    let (sbd, iscsit) = (&names[0], &names[1]);
    let control = |provider: &str, req: serde_json::Value| -> Result<serde_json::Value, String> {
        let reply = stmf
            .provider_control(provider, &req.to_string())
            .map_err(|e| format!("provider {provider}: {e}"))?;
        serde_json::from_str(&reply)
            .map_err(|e| format!("provider {provider}: reply is not JSON: {e}"))
    };
    let reply = control(
        sbd,
        serde_json::json!({"op": "create-lu", "backing": "ram", "size": DEFAULT_LU_SIZE, "alias": "default"}),
    )?;
    let guid: Guid = reply
        .get("guid")
        .and_then(|g| g.as_str())
        .ok_or_else(|| format!("provider {sbd}: create-lu reply has no guid"))?
        .parse()
        .map_err(|e| format!("provider {sbd}: create-lu reply: {e}"))?;
    done.lu = Some((sbd.clone(), guid));
    control(
        iscsit,
        serde_json::json!({"op": "create-target", "name": DEFAULT_TARGET, "portals": [DEFAULT_PORTAL]}),
    )?;
    done.target = Some(iscsit.clone());
    let entry = stmf
        .add_view(guid, None, None, None)
        .map_err(|e| format!("adding a view for LU {guid}: {e}"))?;
    Ok(format!(
        "iscsi://{DEFAULT_PORTAL}/{DEFAULT_TARGET}/{}",
        entry.lun
    ))
}

/// Undoes the embedded default in reverse order, best effort.
fn undo_default(stmf: &Stmf, done: DefaultProgress) {
    fn warn<T>(what: &str, r: stmf::Result<T>) {
        if let Err(e) = r {
            tracing::warn!("undoing the embedded default: {what}: {e}");
        }
    }
    if let Some(iscsit) = done.target {
        let req = serde_json::json!({"op": "delete-target", "name": DEFAULT_TARGET});
        warn(
            "deleting the target",
            stmf.provider_control(&iscsit, &req.to_string()),
        );
    }
    if let Some((sbd, guid)) = done.lu {
        let req = serde_json::json!({"op": "delete-lu", "guid": guid});
        warn(
            "deleting the LU",
            stmf.provider_control(&sbd, &req.to_string()),
        );
    }
    for p in done.providers.iter().rev() {
        warn("unloading a provider", stmf.unload_provider(p));
    }
}
