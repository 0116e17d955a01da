//! Opening provider libraries and checking their root module before anything else is called.
//!
//! Before a library is opened, its path must be trusted ([`crate::trust`]): the file and
//! every directory and link on its way owned by root or the daemon's user and writable by
//! nobody else (sticky directories excepted on the way). Loading a library runs its code in
//! the daemon, so whoever can change it owns the daemon. `stmfd --allow-insecure-providers`
//! loads an untrusted library anyway, with a warning.

use crate::error::{ErrorKind, Result, StmfError};
use crate::trust::{self, Rule, INSECURE_PROVIDERS_FLAG};
use plugins_sdk::abi::{ProviderKind, ProviderRoot, ABI_VERSION, ROOT_MAGIC, ROOT_SYMBOL};
use plugins_sdk::layout::check_layouts;
use std::path::Path;

fn load_err(path: &str, why: impl std::fmt::Display) -> StmfError {
    StmfError::new(ErrorKind::ProviderLoad, format!("{path}: {why}"))
}

/// The full error chain of a libloading error (its Display alone says only "dlopen failed").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Opens `path` and returns the library with its checked root module.
pub(crate) fn open(path: &Path) -> Result<(libloading::Library, &'static ProviderRoot)> {
    let shown = path.display().to_string();
    if !path.is_file() {
        return Err(load_err(&shown, "no such file"));
    }
    check_trusted(path, &shown)?;
    // SAFETY: loading a library runs its initialisers; loading providers is what the admin
    // asked for. Nothing else from it is trusted before the checks below.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| {
        load_err(
            &shown,
            format!("not a loadable shared library ({})", chain(&e)),
        )
    })?;
    // SAFETY: the symbol, if present, has the documented signature; its absence is an error.
    let root_fn = unsafe { lib.get::<extern "C" fn() -> *const ProviderRoot>(ROOT_SYMBOL) }
        .map_err(|_| {
            load_err(
                &shown,
                "not an rstmf provider: it exports no `rstmf_provider_root` symbol",
            )
        })?;
    let root = root_fn();
    // SAFETY: the root lives in the library's static data, alive while `lib` is loaded; the
    // core keeps `lib` for as long as it uses the root.
    let root = unsafe { check_root(root, &shown)? };
    Ok((lib, root))
}

/// Refuses a library whose path is not trusted, unless `--allow-insecure-providers`.
fn check_trusted(path: &Path, shown: &str) -> Result<()> {
    let Err(u) = trust::check_path(path, Rule::TrustedFile) else {
        return Ok(());
    };
    if trust::allow_insecure_providers() {
        tracing::warn!(
            "loading the insecure provider library {shown} ({INSECURE_PROVIDERS_FLAG}): {u}"
        );
        return Ok(());
    }
    Err(load_err(
        shown,
        format!(
            "refused: insecure provider library: {u}; fix: {}, or start stmfd with {INSECURE_PROVIDERS_FLAG} to load it anyway",
            u.fix()
        ),
    ))
}

/// Validates a root module: magic, ABI version, size, every type layout, kind and name.
///
/// # Safety
/// `root` must be null or point to readable memory at least as large as the ABI-version-stable
/// prefix (magic, abi_version, root_size), valid for `'static` (or as long as it is used).
pub(crate) unsafe fn check_root(
    root: *const ProviderRoot,
    shown: &str,
) -> Result<&'static ProviderRoot> {
    if root.is_null() {
        return Err(load_err(shown, "its root module pointer is null"));
    }
    // The first three fields have the same place in every ABI version: read them before
    // trusting the rest of the struct.
    // SAFETY: per the function contract the prefix is readable.
    let (magic, abi, size) = unsafe { ((*root).magic, (*root).abi_version, (*root).root_size) };
    if magic != ROOT_MAGIC {
        return Err(load_err(
            shown,
            "not an rstmf provider root module (bad magic)",
        ));
    }
    let sdk = env!("CARGO_PKG_VERSION");
    if abi != ABI_VERSION {
        return Err(load_err(
            shown,
            format!("built against plugins-sdk ABI {abi}, but this stmfd speaks ABI {ABI_VERSION}: rebuild the provider against plugins-sdk {sdk} (ABI {ABI_VERSION})"),
        ));
    }
    if size as usize != std::mem::size_of::<ProviderRoot>() {
        return Err(load_err(shown, format!("root module is {size} bytes, ABI {ABI_VERSION} defines {}: rebuild the provider against plugins-sdk {sdk}", std::mem::size_of::<ProviderRoot>())));
    }
    // SAFETY: same ABI version and size: the whole struct is readable.
    let r: &'static ProviderRoot = unsafe { &*root };
    if r.layouts.is_null() || r.layouts_len > 1024 {
        return Err(load_err(shown, "malformed layout table"));
    }
    // SAFETY: the provider's static layout table, `layouts_len` entries (bounded above).
    let table = unsafe { std::slice::from_raw_parts(r.layouts, r.layouts_len) };
    check_layouts(table).map_err(|m| {
        load_err(
            shown,
            format!("ABI layout mismatch: {m}; rebuild the provider against plugins-sdk {sdk}"),
        )
    })?;
    if r.kind != ProviderKind::PORT && r.kind != ProviderKind::LU {
        return Err(load_err(
            shown,
            format!("unknown provider kind {}", r.kind.0),
        ));
    }
    // SAFETY: static strings of the provider.
    let name = unsafe { r.name.as_str() };
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(load_err(shown, format!("invalid provider name {name:?}")));
    }
    Ok(r)
}
