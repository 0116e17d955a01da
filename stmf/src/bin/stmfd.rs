//! stmfd: the rstmf daemon. Owns the core, restores the saved configuration, and serves the
//! control protocol (`docs/control-protocol.md`) on a Unix socket.

use anyhow::{bail, Context};
use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::fs::{self, DirBuilder, File};
use std::io::IsTerminal;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;
use stmf::config::{self as store_config, ConfigStore, PersistedConfig};
use stmf::control::{self, ClientLimits, ClientSlots, DEFAULT_SOCKET};
use stmf::trust::{self, Rule};
use stmf::{Guid, Settings, Stmf};
use tracing_subscriber::EnvFilter;

/// The rstmf daemon: loads providers, restores LUs, targets, groups and views, and serves
/// stmfadm, sbdadm and itadm on its control socket.
#[derive(Parser, Debug)]
#[command(name = "stmfd", version)]
struct Opts {
    /// Directory of the persisted configuration (stmf.json): created 0700 if missing;
    /// refused unless owned by stmfd's user and writable by nobody else.
    #[arg(
        long,
        env = "STMFD_STATE_DIR",
        default_value = "/var/lib/rstmf",
        value_name = "DIR"
    )]
    state_dir: PathBuf,
    /// Control socket (created with mode 0600). Its directory is created 0700 if missing and
    /// refused unless owned by stmfd's user and writable by nobody else.
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
    /// Load provider libraries even when their file, or a directory on their path, is
    /// writable by group or others or owned by another user than root or stmfd's (each such
    /// load is logged as a warning). Only as this flag; never saved.
    #[arg(long)]
    allow_insecure_providers: bool,
    /// Control clients served at once; one more gets a `busy` error and is closed.
    #[arg(long, value_name = "N", default_value_t = control::DEFAULT_MAX_CLIENTS as u32,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    max_control_clients: u32,
    /// Time a control client has to send each request and to take each reply before it is
    /// disconnected.
    #[arg(long, value_name = "MS", default_value_t = control::DEFAULT_CLIENT_TIMEOUT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    control_timeout_ms: u64,
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
    raise_nofile_limit();
    return_freed_memory();
    private_dir("state dir", &opts.state_dir)?;
    if opts.allow_insecure_providers {
        trust::set_allow_insecure_providers(true);
        tracing::warn!(
            "{}: provider libraries that others can change will be loaded",
            trust::INSECURE_PROVIDERS_FLAG
        );
    }
    let limits = ClientLimits {
        max_clients: opts.max_control_clients as usize,
        timeout: Duration::from_millis(opts.control_timeout_ms),
    };
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
            .spawn(move || accept_loop(listener, stmf, store, stop, limits))
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

/// Creates `dir` with mode 0700 when it is missing (missing parents too), then refuses it
/// unless it and the path to it are trusted ([`Rule::PrivateDir`]): one line naming the
/// path, the problem and the fix.
fn private_dir(what: &str, dir: &Path) -> anyhow::Result<()> {
    if fs::symlink_metadata(dir).is_err() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("{what} {}: creating it", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("{what} {}: chmod 0700", dir.display()))?;
    }
    if let Err(u) = trust::check_path(dir, Rule::PrivateDir) {
        bail!(
            "{what} {} refused: {u}; fix: {}{}",
            dir.display(),
            u.fix(),
            if u.is_final {
                ""
            } else {
                " (or use another directory)"
            }
        );
    }
    Ok(())
}

/// The open-files limit to ask for: the hard limit (`nr_open`, the kernel's ceiling, when
/// the hard limit is unlimited); `None` when the soft limit is there already.
fn nofile_target(soft: u64, hard: u64, nr_open: Option<u64>) -> Option<u64> {
    let ceiling = if hard == libc::RLIM_INFINITY {
        nr_open.unwrap_or(1 << 20)
    } else {
        hard
    };
    (soft < ceiling).then_some(ceiling)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (every connection, LU file and client
/// is a descriptor), logs the limit in force, and goes on with a warning when it cannot.
fn raise_nofile_limit() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        let e = std::io::Error::last_os_error();
        return tracing::warn!("cannot read the open-files limit (RLIMIT_NOFILE): {e}");
    }
    let nr_open = fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let Some(want) = nofile_target(rl.rlim_cur, rl.rlim_max, nr_open) else {
        return tracing::info!("open-files limit (RLIMIT_NOFILE): {}", rl.rlim_cur);
    };
    let new = libc::rlimit {
        rlim_cur: want,
        rlim_max: rl.rlim_max,
    };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } == 0 {
        tracing::info!(
            "open-files limit (RLIMIT_NOFILE): {want} (raised from {})",
            rl.rlim_cur
        );
    } else {
        let e = std::io::Error::last_os_error();
        tracing::warn!(
            "cannot raise the open-files limit (RLIMIT_NOFILE) from {} to {want}: {e}; going on with {}",
            rl.rlim_cur,
            rl.rlim_cur
        );
    }
}

/// Makes memory freed after a burst go back to the system (docs/security.md, "Memory
/// comes back"). glibc raises its mmap threshold each time a mapped block is freed, up
/// to 32 MiB, after which large blocks (send queues, receive buffers) come from the
/// heap and stay in it; a fixed threshold keeps them mapped, and a trim every two
/// seconds gives back what the heaps of all threads hold free.
fn return_freed_memory() {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt only sets an allocator parameter.
        if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10) } == 0 {
            tracing::warn!("cannot set the allocator's mmap threshold");
        }
        let spawned = std::thread::Builder::new()
            .name("malloc-trim".into())
            .spawn(|| loop {
                std::thread::sleep(Duration::from_secs(2));
                // SAFETY: malloc_trim takes the allocator's own locks; no pointers.
                unsafe { libc::malloc_trim(0) };
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the memory trim thread: {e}");
        }
    }
}

/// Holds an exclusive lock on `<state-dir>/.stmfd.lock` so two daemons never share a state dir.
/// A symbolic link or special file planted there is refused, never followed.
fn lock_state_dir(dir: &Path) -> anyhow::Result<File> {
    let path = dir.join(".stmfd.lock");
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .with_context(|| {
            format!(
                "opening {} (a symbolic link there is not followed: remove it)",
                path.display()
            )
        })?;
    let kind = f
        .metadata()
        .with_context(|| format!("stat {}", path.display()))?
        .file_type();
    if !kind.is_file() {
        bail!(
            "{} is not a regular file; remove it and start stmfd again",
            path.display()
        );
    }
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
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    private_dir("socket directory", parent)?;
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

/// Accepts control clients: each gets a thread and a slot among `limits.max_clients`; one
/// more is refused with a `busy` line at once, the others keep being served.
fn accept_loop(
    listener: UnixListener,
    stmf: Stmf,
    store: Arc<ConfigStore>,
    stop: Arc<AtomicBool>,
    limits: ClientLimits,
) {
    let slots = ClientSlots::new(limits.max_clients);
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
        let Some(slot) = slots.try_acquire() else {
            tracing::warn!(
                "control client refused: {} clients connected (--max-control-clients)",
                limits.max_clients
            );
            control::refuse_client(stream, limits.max_clients);
            continue;
        };
        let (stmf, store) = (stmf.clone(), store.clone());
        let spawned = thread::Builder::new()
            .name("stmfd-client".into())
            .spawn(move || {
                let _slot = slot;
                if let Err(e) = control::serve_client(&stmf, &store, &stream, &limits) {
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
        let copied = store_config::read_regular(store.path())
            .and_then(|bytes| store_config::write_file_atomic(&backup, &bytes.unwrap_or_default()));
        match copied {
            Ok(()) => tracing::error!(
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

#[cfg(test)]
mod tests {
    use super::nofile_target;

    #[test]
    fn nofile_goes_to_the_hard_limit() {
        assert_eq!(nofile_target(1024, 524288, None), Some(524288));
        assert_eq!(nofile_target(524288, 524288, None), None);
        assert_eq!(
            nofile_target(1024, libc::RLIM_INFINITY, Some(1048576)),
            Some(1048576)
        );
        assert_eq!(
            nofile_target(1024, libc::RLIM_INFINITY, None),
            Some(1 << 20)
        );
        assert_eq!(
            nofile_target(1 << 20, libc::RLIM_INFINITY, Some(1 << 20)),
            None
        );
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
