//! The provider root module and the [`export_provider!`] macro.

use crate::abi::*;
use crate::guard::guard;
use crate::host::{Host, ReplySink};
use core::ffi::c_void;

/// What a provider gets at creation: its [`Host`] and identity.
#[derive(Clone, Copy, Debug)]
pub struct ProviderContext {
    host: Host,
}

impl ProviderContext {
    /// The core's services for this provider instance.
    pub fn host(&self) -> Host {
        self.host
    }
}

/// A provider: one instance per loaded library. Implement it, then export it with
/// [`crate::export_provider!`].
///
/// ```
/// use plugins_sdk::{Provider, ProviderContext, ProviderKind};
///
/// struct Nothing;
/// impl Provider for Nothing {
///     const NAME: &'static str = "nothing";
///     const VERSION: &'static str = "0.1.0";
///     const DESCRIPTION: &'static str = "does nothing";
///     const KIND: ProviderKind = ProviderKind::LU;
///     fn create(_ctx: ProviderContext, _config: &str) -> Result<Self, String> {
///         Ok(Nothing)
///     }
/// }
/// plugins_sdk::export_provider!(Nothing);
/// ```
pub trait Provider: Send + Sync + Sized + 'static {
    /// Unique name (`"sbd"`, `"iscsit"`, `"example-ram-lu"`).
    const NAME: &'static str;
    /// Version of the provider (semver).
    const VERSION: &'static str;
    /// One-line description.
    const DESCRIPTION: &'static str;
    /// Port or LU provider.
    const KIND: ProviderKind;

    /// Creates the instance from its saved configuration (JSON, empty when there is none),
    /// registering its LUs or ports with the core. An error message refuses the load.
    fn create(ctx: ProviderContext, config: &str) -> Result<Self, String>;

    /// Handles a management request (JSON in, JSON out); `Err` carries the message shown to
    /// the admin.
    fn control(&self, _request: &str) -> Result<String, String> {
        Err(format!(
            "provider {} accepts no control requests",
            Self::NAME
        ))
    }

    /// The configuration to persist (JSON), given back to [`Provider::create`] on restart.
    fn save_config(&self) -> String {
        String::new()
    }

    /// Called when the provider is unloaded or the daemon stops: deregister your LUs or
    /// ports here (the core releases whatever is still registered afterwards).
    fn shutdown(&self) {}
}

unsafe extern "C" fn create_shim<P: Provider>(
    host: *const HostApi,
    token: ProviderToken,
    config: RStr,
    out: *mut *mut c_void,
    err_sink: *mut c_void,
) -> Status {
    guard("provider.create", || {
        // SAFETY: the core passes its table, valid while the provider is loaded.
        let Some(host) = (unsafe { Host::from_raw(host, token) }) else {
            return Status::INVALID_ARG;
        };
        crate::log::install_bridge(host);
        // SAFETY: the config string is valid for the call.
        let config = unsafe { config.as_str() };
        match P::create(ProviderContext { host }, &config) {
            Ok(provider) => {
                // SAFETY: out is a valid place supplied by the core.
                unsafe {
                    *out = Box::into_raw(Box::new(Instance { host, provider })) as *mut c_void
                };
                Status::SUCCESS
            }
            Err(msg) => {
                // SAFETY: err_sink is the core's sink for this call.
                unsafe { ReplySink::new(host.api(), err_sink) }.write(&msg);
                Status::INVALID_ARG
            }
        }
    })
    .unwrap_or(Status::PANICKED)
}

/// What the core's instance pointer points to: the provider and its own host handle (so two
/// instances of one library, in two cores, each log and reply under their own token).
struct Instance<P> {
    host: Host,
    provider: P,
}

unsafe extern "C" fn destroy_shim<P: Provider>(instance: *mut c_void) {
    let _ = guard("provider.destroy", || {
        if instance.is_null() {
            return;
        }
        // SAFETY: instance was created by create_shim and the core destroys it once.
        let p = unsafe { Box::from_raw(instance as *mut Instance<P>) };
        p.provider.shutdown();
        drop(p);
    });
}

unsafe extern "C" fn control_shim<P: Provider>(
    instance: *mut c_void,
    request: RStr,
    sink: *mut c_void,
) -> Status {
    guard("provider.control", || {
        // SAFETY: instance from create_shim, alive until destroy.
        let inst = unsafe { &*(instance as *const Instance<P>) };
        // SAFETY: request valid for the call.
        let req = unsafe { request.as_str() };
        let (status, text) = match inst.provider.control(&req) {
            Ok(t) => (Status::SUCCESS, t),
            Err(e) => (Status::INVALID_ARG, e),
        };
        // SAFETY: sink valid for the call.
        unsafe { ReplySink::new(inst.host.api(), sink) }.write(&text);
        status
    })
    .unwrap_or(Status::PANICKED)
}

unsafe extern "C" fn save_config_shim<P: Provider>(
    instance: *mut c_void,
    sink: *mut c_void,
) -> Status {
    guard("provider.save_config", || {
        // SAFETY: instance from create_shim.
        let inst = unsafe { &*(instance as *const Instance<P>) };
        let text = inst.provider.save_config();
        // SAFETY: sink valid for the call.
        unsafe { ReplySink::new(inst.host.api(), sink) }.write(&text);
        Status::SUCCESS
    })
    .unwrap_or(Status::PANICKED)
}

/// The root module of provider `P` (what [`export_provider!`] exports).
pub const fn root_module<P: Provider>() -> ProviderRoot {
    ProviderRoot {
        magic: ROOT_MAGIC,
        abi_version: ABI_VERSION,
        root_size: core::mem::size_of::<ProviderRoot>() as u32,
        kind: P::KIND,
        reserved0: 0,
        name: RStr::new(P::NAME),
        version: RStr::new(P::VERSION),
        description: RStr::new(P::DESCRIPTION),
        layouts: crate::layout::ABI_LAYOUTS.as_ptr(),
        layouts_len: crate::layout::ABI_LAYOUTS.len(),
        create: create_shim::<P>,
        destroy: destroy_shim::<P>,
        control: control_shim::<P>,
        save_config: save_config_shim::<P>,
    }
}

/// Exports `$ty` (a [`crate::Provider`]) as this library's root module, under the symbol the core
/// looks for. Use it once, in a `cdylib`.
#[macro_export]
macro_rules! export_provider {
    ($ty:ty) => {
        /// The provider root module (looked up by the rstmf core).
        #[no_mangle]
        pub extern "C" fn rstmf_provider_root() -> *const $crate::abi::ProviderRoot {
            static ROOT: $crate::abi::ProviderRoot = $crate::__private::root_module::<$ty>();
            &ROOT
        }
    };
}
