//! Race-free access to the fields of a live [`Task`](crate::abi::Task) that change while
//! the task is shared.
//!
//! A task is reachable from several threads at once (the port's, the LU's workers, the
//! core's), and a provider may hold a handle longer than its role lasts. The fields that are
//! written while the task is live — status, sense, residuals, transfer counts, the per-owner
//! private pointers — are therefore only ever accessed through these relaxed atomic loads
//! and stores, by the SDK and by the core alike: a late or concurrent access then reads a
//! stale value instead of being a data race. Ordering between the parties comes from the
//! calls that hand the task over (and the core's state word), not from these accesses. On
//! x86-64 and AArch64 they compile to plain loads and stores.
//!
//! The fields fixed at allocation (CDB, LUN, tag, flags, ...) are read directly: nobody
//! writes them while a reference to the task exists.

use core::ffi::c_void;
use core::sync::atomic::{AtomicPtr, AtomicU16, AtomicU64, AtomicU8, Ordering::Relaxed};

// The atomic views below need the fields' natural alignment to be the atomics' alignment
// (true on the 64-bit targets rstmf supports, not on 32-bit x86).
const _: () = assert!(core::mem::align_of::<AtomicU64>() == core::mem::align_of::<u64>());
const _: () = assert!(core::mem::align_of::<AtomicU16>() == core::mem::align_of::<u16>());
const _: () =
    assert!(core::mem::align_of::<AtomicPtr<c_void>>() == core::mem::align_of::<*mut c_void>());

/// Loads a `u64` field.
///
/// # Safety
/// `p` must point to a field of a task whose memory stays allocated for the call (a
/// reference is held), accessed by everyone only through this module while shared.
#[inline]
pub unsafe fn load_u64(p: *mut u64) -> u64 {
    // SAFETY: the caller's contract; the field is aligned (checked above).
    unsafe { AtomicU64::from_ptr(p) }.load(Relaxed)
}

/// Stores a `u64` field (contract of [`load_u64`]).
///
/// # Safety
/// As [`load_u64`].
#[inline]
pub unsafe fn store_u64(p: *mut u64, v: u64) {
    // SAFETY: as in load_u64.
    unsafe { AtomicU64::from_ptr(p) }.store(v, Relaxed)
}

/// Adds to a `u64` field atomically (contract of [`load_u64`]).
///
/// # Safety
/// As [`load_u64`].
#[inline]
pub unsafe fn add_u64(p: *mut u64, v: u64) {
    // SAFETY: as in load_u64.
    unsafe { AtomicU64::from_ptr(p) }.fetch_add(v, Relaxed);
}

/// Loads a `u16` field (contract of [`load_u64`]).
///
/// # Safety
/// As [`load_u64`].
#[inline]
pub unsafe fn load_u16(p: *mut u16) -> u16 {
    // SAFETY: as in load_u64.
    unsafe { AtomicU16::from_ptr(p) }.load(Relaxed)
}

/// Stores a `u16` field (contract of [`load_u64`]).
///
/// # Safety
/// As [`load_u64`].
#[inline]
pub unsafe fn store_u16(p: *mut u16, v: u16) {
    // SAFETY: as in load_u64.
    unsafe { AtomicU16::from_ptr(p) }.store(v, Relaxed)
}

/// Loads a `u8` field (contract of [`load_u64`]).
///
/// # Safety
/// As [`load_u64`].
#[inline]
pub unsafe fn load_u8(p: *mut u8) -> u8 {
    // SAFETY: as in load_u64 (a u8 is always aligned).
    unsafe { AtomicU8::from_ptr(p) }.load(Relaxed)
}

/// Stores a `u8` field (contract of [`load_u64`]).
///
/// # Safety
/// As [`load_u64`].
#[inline]
pub unsafe fn store_u8(p: *mut u8, v: u8) {
    // SAFETY: as in load_u8.
    unsafe { AtomicU8::from_ptr(p) }.store(v, Relaxed)
}

/// Loads a pointer field (contract of [`load_u64`]).
///
/// # Safety
/// As [`load_u64`].
#[inline]
pub unsafe fn load_ptr(p: *mut *mut c_void) -> *mut c_void {
    // SAFETY: as in load_u64.
    unsafe { AtomicPtr::from_ptr(p) }.load(Relaxed)
}

/// Stores a pointer field (contract of [`load_u64`]).
///
/// # Safety
/// As [`load_u64`].
#[inline]
pub unsafe fn store_ptr(p: *mut *mut c_void, v: *mut c_void) {
    // SAFETY: as in load_u64.
    unsafe { AtomicPtr::from_ptr(p) }.store(v, Relaxed)
}

/// Copies `dst.len()` bytes out of a byte-array field starting at `src`.
///
/// # Safety
/// `src..src + dst.len()` must lie in one byte-array field under the contract of
/// [`load_u64`].
#[inline]
pub unsafe fn read_bytes(src: *mut u8, dst: &mut [u8]) {
    for (i, d) in dst.iter_mut().enumerate() {
        // SAFETY: in bounds by the caller's contract.
        *d = unsafe { load_u8(src.add(i)) };
    }
}

/// Copies `src` into a byte-array field starting at `dst`.
///
/// # Safety
/// `dst..dst + src.len()` must lie in one byte-array field under the contract of
/// [`load_u64`].
#[inline]
pub unsafe fn write_bytes(dst: *mut u8, src: &[u8]) {
    for (i, &s) in src.iter().enumerate() {
        // SAFETY: in bounds by the caller's contract.
        unsafe { store_u8(dst.add(i), s) };
    }
}
