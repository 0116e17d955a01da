//! Layout fingerprints of the ABI types.
//!
//! Every type in [`crate::abi`] gets one [`LayoutEntry`]: its size, alignment and a 64-bit
//! FNV-1a fingerprint over its name, size, alignment and each field's name, offset and size,
//! all computed at compile time. A provider exports its table in its root module; the core
//! compares it entry by entry with its own, so a provider built against an SDK whose types
//! differ is refused with the name of the first type that differs.

use crate::abi::*;
use core::mem::{align_of, offset_of, size_of};

/// Layout of one ABI type as compiled.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayoutEntry {
    /// Type name (static).
    pub name: RStr,
    /// `size_of` the type.
    pub size: u32,
    /// `align_of` the type.
    pub align: u32,
    /// Fingerprint of name, size, alignment and every field's name, offset and size.
    pub fingerprint: u64,
}

// RStr holds a pointer; PartialEq on it compares addresses, so compare by content instead.
impl PartialEq for RStr {
    fn eq(&self, other: &Self) -> bool {
        // SAFETY: layout names are static strings in both libraries.
        unsafe { self.as_str() == other.as_str() }
    }
}
impl Eq for RStr {}

/// Compile-time FNV-1a hasher used for fingerprints.
#[derive(Clone, Copy)]
pub struct Fnv(u64);

impl Fnv {
    /// A fresh hasher.
    pub const fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    /// Mixes bytes in.
    pub const fn bytes(mut self, b: &[u8]) -> Self {
        let mut i = 0;
        while i < b.len() {
            self.0 ^= b[i] as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
            i += 1;
        }
        self
    }
    /// Mixes a number in.
    pub const fn num(self, n: usize) -> Self {
        self.bytes(&(n as u64).to_le_bytes())
    }
    /// The fingerprint.
    pub const fn finish(self) -> u64 {
        self.0
    }
}

impl Default for Fnv {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds the [`LayoutEntry`] of a struct from its field list.
macro_rules! layout {
    ($ty:ident { $($field:ident : $fty:ty),* $(,)? }) => {{
        let h = Fnv::new()
            .bytes(stringify!($ty).as_bytes())
            .num(size_of::<$ty>())
            .num(align_of::<$ty>());
        $(
            let h = h
                .bytes(stringify!($field).as_bytes())
                .num(offset_of!($ty, $field))
                .num(size_of::<$fty>());
        )*
        LayoutEntry {
            name: RStr::new(stringify!($ty)),
            size: size_of::<$ty>() as u32,
            align: align_of::<$ty>() as u32,
            fingerprint: h.finish(),
        }
    }};
}

type Fp = *const u8;

/// Layouts of every type that crosses the boundary, as compiled into this build of the SDK.
pub static ABI_LAYOUTS: [LayoutEntry; 15] = [
    layout!(RStr { ptr: *const u8, len: usize }),
    layout!(Status {}),
    layout!(LayoutEntry {
        name: RStr,
        size: u32,
        align: u32,
        fingerprint: u64
    }),
    layout!(Task {
        session: SessionHandle,
        lu: LuHandle,
        lun: [u8; 8],
        itl_private: Fp,
        port_private: Fp,
        lu_private: Fp,
        tag: u64,
        tm_ref_tag: u64,
        expected_xfer_len: u64,
        cmd_sn: u32,
        flags: u32,
        cdb: [u8; INLINE_CDB_LEN],
        ext_cdb: Fp,
        cdb_len: u16,
        task_attr: u8,
        tm_function: u8,
        max_nbufs: u8,
        scsi_status: u8,
        tm_response: u8,
        residual_flags: u8,
        sense_len: u16,
        reserved0: u16,
        residual: u64,
        nbytes_transferred: u64,
        cmd_xfer_len: u64,
        sense: [u8; SENSE_LEN],
        host: Fp,
        reserved: [u64; 3],
    }),
    layout!(DataBufRaw {
        data: Fp,
        buf_size: u32,
        xfer_len: u32,
        rel_offset: u64,
        flags: u32,
        xfer_status: Status,
        port_private: Fp,
        lu_private: Fp,
        core_private: u64,
    }),
    layout!(TaskRequest {
        lun: [u8; 8],
        cdb: Fp,
        cdb_len: u32,
        flags: u32,
        tag: u64,
        expected_xfer_len: u64,
        cmd_sn: u32,
        task_attr: u8,
        tm_function: u8,
        max_nbufs: u8,
        reserved0: u8,
        tm_ref_tag: u64,
        port_private: Fp,
    }),
    layout!(LuOps {
        new_task: Fp,
        dbuf_xfer_done: Fp,
        abort: Fp,
        task_free: Fp,
        ctl: Fp,
        event: Fp,
        info: Fp,
        release: Fp,
    }),
    layout!(PortOps {
        xfer_data: Fp,
        send_status: Fp,
        task_free: Fp,
        abort: Fp,
        ctl: Fp,
        dbuf_alloc: Fp,
        dbuf_free: Fp,
        info: Fp,
        release: Fp,
    }),
    layout!(LuRegistration {
        guid: [u8; 16],
        alias: RStr,
        ctx: Fp,
        ops: LuOps
    }),
    layout!(LportRegistration {
        name: RStr,
        alias: RStr,
        protocol: RStr,
        ctx: Fp,
        ops: PortOps
    }),
    layout!(SessionRegistration {
        initiator: RStr,
        alias: RStr,
        transport_id: RStr,
        flags: u32
    }),
    layout!(HostApi {
        abi_version: u32,
        size: u32,
        max_log_level: Fp,
        log: Fp,
        reply: Fp,
        register_lu: Fp,
        deregister_lu: Fp,
        register_lport: Fp,
        deregister_lport: Fp,
        lu_ctl_complete: Fp,
        lport_ctl_complete: Fp,
        register_session: Fp,
        deregister_session: Fp,
        task_alloc: Fp,
        post_task: Fp,
        data_xfer_done: Fp,
        send_status_done: Fp,
        lport_aborted: Fp,
        dbuf_alloc: Fp,
        dbuf_free: Fp,
        xfer_data: Fp,
        send_status: Fp,
        lu_aborted: Fp,
        lu_changed: Fp,
        session_info: Fp,
        task_hold: Fp,
        task_rele: Fp,
        task_abandon: Fp,
    }),
    layout!(SessionInfoRaw {
        initiator: RStr,
        transport_id: RStr,
        target: RStr,
        relative_port_id: u16,
        reserved: [u16; 3],
        id: u64
    }),
    layout!(ProviderRoot {
        magic: u64,
        abi_version: u32,
        root_size: u32,
        kind: ProviderKind,
        reserved0: u32,
        name: RStr,
        version: RStr,
        description: RStr,
        layouts: Fp,
        layouts_len: usize,
        create: Fp,
        destroy: Fp,
        control: Fp,
        save_config: Fp,
    }),
    layout!(ProviderKind {}),
];

/// Why a provider's layout table does not match the core's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutMismatch {
    /// The provider's table has another number of entries.
    #[error("the provider describes {provider} ABI types, this build has {host}")]
    Count {
        /// Entries in the provider.
        provider: usize,
        /// Entries in the core.
        host: usize,
    },
    /// One type differs.
    #[error("type {name}: provider has size {provider_size} align {provider_align}, this build has size {host_size} align {host_align}{}", if *.same_shape { " (same size, different fields)" } else { "" })]
    Type {
        /// Type name.
        name: String,
        /// Size in the provider.
        provider_size: u32,
        /// Alignment in the provider.
        provider_align: u32,
        /// Size in the core.
        host_size: u32,
        /// Alignment in the core.
        host_align: u32,
        /// True when sizes agree but fields differ.
        same_shape: bool,
    },
}

/// Compares a provider's layout table with [`ABI_LAYOUTS`].
pub fn check_layouts(provider: &[LayoutEntry]) -> Result<(), LayoutMismatch> {
    if provider.len() != ABI_LAYOUTS.len() {
        return Err(LayoutMismatch::Count {
            provider: provider.len(),
            host: ABI_LAYOUTS.len(),
        });
    }
    for (p, h) in provider.iter().zip(ABI_LAYOUTS.iter()) {
        if p != h {
            return Err(LayoutMismatch::Type {
                // SAFETY: the provider's names are static strings in its image (checked by the
                // caller to be mapped); lossy decoding never trusts the bytes.
                name: unsafe { p.name.as_str().into_owned() },
                provider_size: p.size,
                provider_align: p.align,
                host_size: h.size,
                host_align: h.align,
                same_shape: p.size == h.size && p.align == h.align,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_table_matches() {
        assert_eq!(check_layouts(&ABI_LAYOUTS), Ok(()));
    }

    #[test]
    fn changed_type_is_named() {
        let mut t = ABI_LAYOUTS;
        t[3].fingerprint ^= 1;
        match check_layouts(&t) {
            Err(LayoutMismatch::Type {
                name, same_shape, ..
            }) => {
                assert_eq!(name, "Task");
                assert!(same_shape);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            check_layouts(&t[..5]),
            Err(LayoutMismatch::Count { provider: 5, .. })
        ));
    }

    #[test]
    fn fingerprints_differ_per_type() {
        for (i, a) in ABI_LAYOUTS.iter().enumerate() {
            for b in &ABI_LAYOUTS[i + 1..] {
                assert_ne!(a.fingerprint, b.fingerprint);
            }
        }
    }
}
