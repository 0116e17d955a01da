//! The host services table given to providers: thin `extern "C"` entry points that validate
//! handles on management paths, guard against panics (a core bug must not unwind into a
//! provider), and call the core.

use crate::objects::{LPORTS, LUS, PROVIDERS};
use crate::route;
use plugins_sdk::abi::*;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `f`, turning a panic into `fallback` (logged).
fn guarded<R>(what: &str, fallback: R, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            tracing::error!(
                "core panicked in host entry {what}: {}",
                plugins_sdk::panic_message(&*p)
            );
            fallback
        }
    }
}

unsafe extern "C" fn max_log_level() -> LogLevel {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::OFF => LogLevel(0),
        LevelFilter::ERROR => LogLevel::ERROR,
        LevelFilter::WARN => LogLevel::WARN,
        LevelFilter::INFO => LogLevel::INFO,
        LevelFilter::DEBUG => LogLevel::DEBUG,
        _ => LogLevel::TRACE,
    }
}

thread_local! {
    /// Set while a provider's event is being re-emitted, so a bridge installed in this same
    /// image (a built-in provider in a process without a subscriber) cannot loop.
    static IN_LOG: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

unsafe extern "C" fn log(provider: ProviderToken, level: LogLevel, target: RStr, message: RStr) {
    if IN_LOG.with(|f| f.replace(true)) {
        return;
    }
    guarded("log", (), || {
        let name = PROVIDERS
            .get(provider.0)
            .map(|p| p.name.clone())
            .unwrap_or_else(|| "?".into());
        // SAFETY: strings valid for the call.
        let (target, message) = unsafe { (target.as_str(), message.as_str()) };
        match level {
            LogLevel::ERROR => {
                tracing::error!(target: "provider", provider = %name, module = %target, "{message}")
            }
            LogLevel::WARN => {
                tracing::warn!(target: "provider", provider = %name, module = %target, "{message}")
            }
            LogLevel::INFO => {
                tracing::info!(target: "provider", provider = %name, module = %target, "{message}")
            }
            LogLevel::DEBUG => {
                tracing::debug!(target: "provider", provider = %name, module = %target, "{message}")
            }
            _ => {
                tracing::trace!(target: "provider", provider = %name, module = %target, "{message}")
            }
        }
    });
    IN_LOG.with(|f| f.set(false));
}

unsafe extern "C" fn reply(sink: *mut c_void, text: RStr) {
    guarded("reply", (), || {
        if sink.is_null() {
            return;
        }
        // SAFETY: the core passes a `*mut String` as sink for the duration of the call that
        // hands it out; the text is valid for this call.
        unsafe { (*(sink as *mut String)).push_str(&text.as_str()) }
    })
}

unsafe extern "C" fn register_lu(
    provider: ProviderToken,
    reg: *const LuRegistration,
    out: *mut LuHandle,
) -> Status {
    guarded("register_lu", Status::INVALID_ARG, || {
        let (Some(p), false, false) = (PROVIDERS.get(provider.0), reg.is_null(), out.is_null())
        else {
            return Status::INVALID_ARG;
        };
        let Some(core) = p.core.upgrade() else {
            return Status::BAD_STATE;
        };
        // SAFETY: non-null, valid for the call.
        match core.register_lu(&p, unsafe { &*reg }) {
            Ok(h) => {
                // SAFETY: `out` was checked non-null and is the caller's writable place (ABI
                // contract).
                unsafe { *out = h };
                Status::SUCCESS
            }
            Err(s) => s,
        }
    })
}

unsafe extern "C" fn deregister_lu(lu: LuHandle) -> Status {
    guarded("deregister_lu", Status::INVALID_ARG, || {
        match LUS.get(lu.0) {
            Some(l) => match l.provider.core.upgrade() {
                Some(core) => core.deregister_lu(&l),
                None => Status::BAD_STATE,
            },
            None => Status::NOT_FOUND,
        }
    })
}

unsafe extern "C" fn register_lport(
    provider: ProviderToken,
    reg: *const LportRegistration,
    out: *mut LportHandle,
) -> Status {
    guarded("register_lport", Status::INVALID_ARG, || {
        let (Some(p), false, false) = (PROVIDERS.get(provider.0), reg.is_null(), out.is_null())
        else {
            return Status::INVALID_ARG;
        };
        let Some(core) = p.core.upgrade() else {
            return Status::BAD_STATE;
        };
        // SAFETY: non-null, valid for the call.
        match core.register_lport(&p, unsafe { &*reg }) {
            Ok(h) => {
                // SAFETY: `out` was checked non-null and is the caller's writable place (ABI
                // contract).
                unsafe { *out = h };
                Status::SUCCESS
            }
            Err(s) => s,
        }
    })
}

unsafe extern "C" fn deregister_lport(lport: LportHandle) -> Status {
    guarded("deregister_lport", Status::INVALID_ARG, || {
        match LPORTS.get(lport.0) {
            Some(l) => match l.provider.core.upgrade() {
                Some(core) => core.deregister_lport(&l),
                None => Status::BAD_STATE,
            },
            None => Status::NOT_FOUND,
        }
    })
}

unsafe extern "C" fn lu_ctl_complete(lu: LuHandle, cmd: CtlCmd, status: Status) {
    guarded("lu_ctl_complete", (), || {
        if let Some(l) = LUS.get(lu.0) {
            crate::core::ctl_complete(&l.ctl, &l.ctl_cv, cmd, status);
        }
    })
}

unsafe extern "C" fn lport_ctl_complete(lport: LportHandle, cmd: CtlCmd, status: Status) {
    guarded("lport_ctl_complete", (), || {
        if let Some(l) = LPORTS.get(lport.0) {
            crate::core::ctl_complete(&l.ctl, &l.ctl_cv, cmd, status);
        }
    })
}

unsafe extern "C" fn register_session(
    lport: LportHandle,
    reg: *const SessionRegistration,
    out: *mut SessionHandle,
) -> Status {
    guarded("register_session", Status::INVALID_ARG, || {
        let (Some(l), false, false) = (LPORTS.get(lport.0), reg.is_null(), out.is_null()) else {
            return Status::INVALID_ARG;
        };
        let Some(core) = l.provider.core.upgrade() else {
            return Status::BAD_STATE;
        };
        // SAFETY: non-null, valid for the call.
        match core.register_session(&l, unsafe { &*reg }) {
            Ok(h) => {
                // SAFETY: `out` was checked non-null and is the caller's writable place (ABI
                // contract).
                unsafe { *out = h };
                Status::SUCCESS
            }
            Err(s) => s,
        }
    })
}

unsafe extern "C" fn deregister_session(session: SessionHandle) -> Status {
    guarded("deregister_session", Status::INVALID_ARG, || {
        crate::core::deregister_session(session)
    })
}

unsafe extern "C" fn task_alloc(
    session: SessionHandle,
    req: *const TaskRequest,
    out: *mut *mut Task,
) -> Status {
    guarded("task_alloc", Status::ALLOC_FAILURE, || {
        if session.0.is_null() || req.is_null() || out.is_null() {
            return Status::INVALID_ARG;
        }
        // SAFETY: non-null request valid for the call.
        match route::task_alloc(session.0 as *const _, unsafe { &*req }) {
            Ok(t) => {
                // SAFETY: `out` was checked non-null and is the caller's writable place (ABI
                // contract).
                unsafe { *out = t };
                Status::SUCCESS
            }
            Err(s) => s,
        }
    })
}

unsafe extern "C" fn post_task(task: *mut Task, initial: *mut DataBufRaw) {
    if !task.is_null() {
        guarded("post_task", (), || route::post_task(task, initial))
    }
}

unsafe extern "C" fn data_xfer_done(task: *mut Task, dbuf: *mut DataBufRaw, status: Status) {
    if !task.is_null() && !dbuf.is_null() {
        guarded("data_xfer_done", (), || {
            route::data_xfer_done(task, dbuf, status)
        })
    }
}

unsafe extern "C" fn send_status_done(task: *mut Task, status: Status) {
    if !task.is_null() {
        guarded("send_status_done", (), || {
            route::send_status_done(task, status)
        })
    }
}

unsafe extern "C" fn lport_aborted(task: *mut Task, _status: Status) {
    if !task.is_null() {
        guarded("lport_aborted", (), || route::lport_aborted(task))
    }
}

unsafe extern "C" fn dbuf_alloc(
    task: *mut Task,
    size: u32,
    min_size: *mut u32,
    out: *mut *mut DataBufRaw,
) -> Status {
    if task.is_null() || min_size.is_null() || out.is_null() {
        return Status::INVALID_ARG;
    }
    guarded("dbuf_alloc", Status::ALLOC_FAILURE, || {
        route::dbuf_alloc(task, size, min_size, out)
    })
}

unsafe extern "C" fn dbuf_free(task: *mut Task, dbuf: *mut DataBufRaw) {
    if !task.is_null() && !dbuf.is_null() {
        guarded("dbuf_free", (), || route::dbuf_free(task, dbuf))
    }
}

unsafe extern "C" fn xfer_data(task: *mut Task, dbuf: *mut DataBufRaw, flags: u32) -> Status {
    if task.is_null() || dbuf.is_null() {
        return Status::INVALID_ARG;
    }
    guarded("xfer_data", Status::IO_ERROR, || {
        route::xfer_data(task, dbuf, flags)
    })
}

unsafe extern "C" fn send_status(task: *mut Task, flags: u32) -> Status {
    if task.is_null() {
        return Status::INVALID_ARG;
    }
    guarded("send_status", Status::IO_ERROR, || {
        route::send_status(task, flags)
    })
}

unsafe extern "C" fn lu_aborted(task: *mut Task, _status: Status) {
    if !task.is_null() {
        guarded("lu_aborted", (), || route::lu_aborted(task))
    }
}

unsafe extern "C" fn lu_changed(lu: LuHandle) {
    guarded("lu_changed", (), || {
        if let Some(core) = LUS.get(lu.0).and_then(|l| l.provider.core.upgrade()) {
            core.refresh_maps();
        }
    })
}

unsafe extern "C" fn session_info(session: SessionHandle, out: *mut SessionInfoRaw) -> Status {
    if out.is_null() {
        return Status::INVALID_ARG;
    }
    guarded(
        "session_info",
        Status::NOT_FOUND,
        || match crate::core::find_session(session) {
            Some(s) => {
                // SAFETY: non-null out-param; the strings live in the session, which the caller
                // may use while it is registered (the contract).
                unsafe {
                    *out = SessionInfoRaw {
                        initiator: RStr::new(&s.initiator),
                        transport_id: RStr::new(&s.transport_id),
                        target: RStr::new(&s.lport.name),
                        relative_port_id: s.lport.relative_id,
                        reserved: [0; 3],
                        id: s.id,
                    }
                };
                Status::SUCCESS
            }
            None => Status::NOT_FOUND,
        },
    )
}

unsafe extern "C" fn task_hold(task: *mut Task) {
    if !task.is_null() {
        crate::task::ref_hold(crate::task::core_of(task));
    }
}

unsafe extern "C" fn task_rele(task: *mut Task) {
    if !task.is_null() {
        guarded("task_rele", (), || {
            crate::task::ref_rele(crate::task::core_of(task))
        })
    }
}

unsafe extern "C" fn task_abandon(task: *mut Task) {
    if !task.is_null() {
        guarded("task_abandon", (), || route::task_abandon(task))
    }
}

/// The table handed to every provider.
pub(crate) static HOST_API: HostApi = HostApi {
    abi_version: ABI_VERSION,
    size: std::mem::size_of::<HostApi>() as u32,
    max_log_level,
    log,
    reply,
    register_lu,
    deregister_lu,
    register_lport,
    deregister_lport,
    lu_ctl_complete,
    lport_ctl_complete,
    register_session,
    deregister_session,
    task_alloc,
    post_task,
    data_xfer_done,
    send_status_done,
    lport_aborted,
    dbuf_alloc,
    dbuf_free,
    xfer_data,
    send_status,
    lu_aborted,
    lu_changed,
    session_info,
    task_hold,
    task_rele,
    task_abandon,
};
