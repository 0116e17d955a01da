//! SANITIZE (SBC-3 §4.11, §5.30): OVERWRITE, BLOCK ERASE (thin LUs whose deallocated
//! blocks read as zeros) and EXIT FAILURE MODE.
//!
//! A sanitize operation runs on a worker in the background, whatever the IMMED bit: with
//! IMMED the command completes once its parameters are checked; without it the command
//! waits for the operation (the task is parked in [`Sanitize::waiter`], with no LU thread
//! inside it). Either way the operation outlives the command: ABORT TASK, ABORT TASK SET,
//! a LUN or target reset and the loss of the initiator's session end the *command*, never
//! the operation, as SBC-3 requires. While it runs every command but INQUIRY and REQUEST
//! SENSE (and the core's REPORT LUNS) ends in NOT READY, SANITIZE IN PROGRESS with the
//! progress indication.
//!
//! OVERWRITE writes at most `sanitize-rate` bytes a second when the LU has that property
//! (sanitizing a large LU at full speed would starve every other LU on the same storage).
//!
//! An operation that fails leaves the LU in sanitize failure mode: commands that access the
//! medium end in MEDIUM ERROR, SANITIZE COMMAND FAILED until a sanitize operation completes
//! without error, or, if the failed SANITIZE had AUSE set, an EXIT FAILURE MODE.

use super::ctx::{Fin, TaskCtx};
use super::{invalid_field, lock, Job, SbdLu, CHUNK};
use plugins_sdk::scsi::{service_action, Asc, Cdb, Sense, SenseKey};
use plugins_sdk::TaskHandle;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a sanitize operation does.
pub(crate) enum Method {
    /// Write `pattern` (from the start of every block) over every block `passes` times,
    /// with `invert` alternately inverted so that the last pass writes it as given; every
    /// pass reaches stable storage before the next starts.
    Overwrite {
        pattern: Vec<u8>,
        passes: u8,
        invert: bool,
    },
    /// Deallocate every block (a thin LU whose deallocated blocks read as zeros).
    BlockErase,
}

/// Sanitize state of one LU.
#[derive(Default)]
pub(crate) struct Sanitize {
    /// An operation is running.
    running: AtomicBool,
    /// Progress of the running operation, in 65536ths.
    progress: AtomicU16,
    /// The last operation failed: `Some(ause)`, the AUSE bit of its command.
    failed: Mutex<Option<bool>>,
    /// The SANITIZE command (IMMED = 0) waiting for the running operation.
    waiter: Mutex<Option<TaskHandle>>,
    /// The LU is going away (deleted, provider stopping): stop the operation.
    cancel: AtomicBool,
}

/// NOT READY, SANITIZE IN PROGRESS, with the progress indication.
fn in_progress(progress: u16) -> Fin {
    Fin::Check(Sense::not_ready(Asc::LU_NOT_READY_SANITIZE_IN_PROGRESS).with_progress(progress))
}

fn failed() -> Fin {
    Fin::Check(Sense::new(
        SenseKey::MEDIUM_ERROR,
        Asc::SANITIZE_COMMAND_FAILED,
    ))
}

impl SbdLu {
    /// Whether this LU can do a BLOCK ERASE: deallocation must leave zeros behind (LBPRZ),
    /// or the "erased" blocks could still show their old data.
    pub(crate) fn block_erase_supported(&self) -> bool {
        self.thin() && self.store.caps().discard_zeroes
    }

    /// The check every command but INQUIRY and REQUEST SENSE passes while a sanitize
    /// operation runs (SBC-3 §4.11.2).
    pub(crate) fn sanitize_busy(&self) -> Result<(), Fin> {
        if self.sanitize.running.load(Ordering::Acquire) {
            return Err(in_progress(self.sanitize.progress.load(Ordering::Relaxed)));
        }
        Ok(())
    }

    /// The medium state for commands that access it: sanitizing, or failed.
    pub(crate) fn sanitize_medium(&self) -> Result<(), Fin> {
        self.sanitize_busy()?;
        if lock(&self.sanitize.failed).is_some() {
            return Err(failed());
        }
        Ok(())
    }

    /// Checks a SANITIZE CDB and plans it: OVERWRITE gathers its parameter list, BLOCK
    /// ERASE runs, EXIT FAILURE MODE is answered here. `Ok(None)` when nothing is left to
    /// do, `Ok(Some(exec))` when `exec` must run (after gathering `param_len` bytes).
    pub(crate) fn plan_sanitize(&self, cdb: &Cdb<'_>) -> Result<Option<(u32, super::Exec)>, Fin> {
        let b = cdb.as_bytes();
        let sa = u16::from(b[1] & 0x1F);
        let immed = b[1] & 0x80 != 0;
        let ause = b[1] & 0x20 != 0;
        if b[1] & 0x40 != 0 {
            return Err(invalid_field(1, Some(6)));
        }
        if let Some(i) = (2..=6).find(|&i| b[i] != 0) {
            return Err(invalid_field(i as u16, None));
        }
        let len = cdb.parameter_list_length().unwrap_or(0);
        // Parameter list lengths (SBC-3 table 87): an OVERWRITE list is a 4-byte header and
        // a pattern of 1 to block-size bytes; the other service actions take none. A length
        // outside that is INVALID FIELD IN CDB.
        let len_ok = match sa {
            service_action::SANITIZE_OVERWRITE => (5..=4 + self.block_size).contains(&len),
            service_action::SANITIZE_BLOCK_ERASE if self.block_erase_supported() => len == 0,
            service_action::SANITIZE_EXIT_FAILURE_MODE => len == 0,
            _ => return Err(cdb.invalid_service_action().into()),
        };
        if !len_ok {
            return Err(invalid_field(7, None));
        }
        let last_failure = *lock(&self.sanitize.failed);
        if sa == service_action::SANITIZE_EXIT_FAILURE_MODE {
            // Exits only a failure whose command allowed it (AUSE); nothing to exit is
            // not an error.
            return match last_failure {
                Some(false) => Err(invalid_field(1, Some(5))),
                Some(true) => {
                    *lock(&self.sanitize.failed) = None;
                    Ok(None)
                }
                None => Ok(None),
            };
        }
        // After a failure in restricted mode (AUSE = 0) the new operation may not ask for
        // the unrestricted one.
        if last_failure == Some(false) && ause {
            return Err(invalid_field(1, Some(5)));
        }
        self.writable()?;
        Ok(Some((
            len,
            super::Exec::Sanitize {
                sa: sa as u8,
                immed,
                ause,
            },
        )))
    }

    /// Starts the sanitize operation of a planned SANITIZE (on a worker, with the
    /// OVERWRITE parameter list in scratch). `Ok(())`: the operation runs; the command's
    /// status follows now (IMMED, `ctx` completed) or when it ends (parked).
    pub(crate) fn sanitize_start(
        self: &Arc<Self>,
        task: &TaskHandle,
        ctx: &TaskCtx,
        sa: u8,
        immed: bool,
        ause: bool,
    ) -> Result<(), Fin> {
        let method = if u16::from(sa) == service_action::SANITIZE_BLOCK_ERASE {
            Method::BlockErase
        } else {
            overwrite_params(&ctx.scratch(), self.block_size as usize)?
        };
        if self.sanitize.running.swap(true, Ordering::AcqRel) {
            return Err(in_progress(self.sanitize.progress.load(Ordering::Relaxed)));
        }
        self.sanitize.progress.store(0, Ordering::Relaxed);
        if immed {
            ctx.complete(Fin::Good);
        } else {
            let mut w = lock(&self.sanitize.waiter);
            // An aborted command is not parked: its abort completes when this worker
            // leaves, and the core may free it then.
            if !ctx.aborted() {
                *w = Some(task.clone());
            }
        }
        self.pool.submit(Job::Sanitize {
            lu: Arc::clone(self),
            method,
            ause,
        });
        Ok(())
    }

    /// Runs a sanitize operation to its end (a worker job), then completes the waiting
    /// command, if it is still there.
    pub(crate) fn sanitize_run(&self, method: &Method, ause: bool) {
        let r = match method {
            Method::Overwrite {
                pattern,
                passes,
                invert,
            } => self.overwrite(pattern, *passes, *invert),
            Method::BlockErase => {
                let end = self.blocks() << self.shift;
                let _g = self.ranges.write(0..end);
                self.store.discard(0, end).and_then(|()| self.store.flush())
            }
        };
        let fin = match r {
            Ok(()) => {
                *lock(&self.sanitize.failed) = None;
                Fin::Good
            }
            Err(e) => {
                tracing::error!(guid = %crate::guid::to_hex(&self.guid), "sbd: SANITIZE failed: {e}");
                *lock(&self.sanitize.failed) = Some(ause);
                failed()
            }
        };
        self.sanitize.running.store(false, Ordering::Release);
        // The waiter is taken and entered under its lock, so an abort either removed it
        // first (and the core may free it) or finds it busy and waits for our leave.
        let mut w = lock(&self.sanitize.waiter);
        if let Some(task) = w.take() {
            if let Some(ctx) = Self::ctx_of(&task) {
                ctx.enter();
                drop(w);
                ctx.complete(fin);
                self.leave(&task, ctx);
            }
        }
    }

    /// Stops a running sanitize operation at its next chunk: the LU is being deleted or
    /// the provider stops (an interrupted operation is not resumed at the next start).
    pub(crate) fn sanitize_cancel(&self) {
        self.sanitize.cancel.store(true, Ordering::Release);
    }

    /// Runs `abort` (the task context's abort) for `task` under the waiter's lock, after
    /// letting go of `task` if it is the SANITIZE waiting for its operation (the command
    /// goes, the operation stays). Under one lock with [`SbdLu::sanitize_start`]'s parking,
    /// so a task is never parked once its abort has begun.
    pub(crate) fn sanitize_abort<R>(&self, task: &TaskHandle, abort: impl FnOnce() -> R) -> R {
        let mut w = lock(&self.sanitize.waiter);
        if w.as_ref().is_some_and(|t| t.id() == task.id()) {
            *w = None;
        }
        abort()
    }

    fn overwrite(&self, pattern: &[u8], passes: u8, invert: bool) -> std::io::Result<()> {
        let mut buf = vec![0u8; CHUNK as usize];
        let end = self.blocks() << self.shift;
        let total = u64::from(passes) * end;
        let bs = self.block_size as usize;
        let rate = lock(&self.meta).sanitize_rate;
        let start = Instant::now();
        for pass in 0..passes {
            // SBC-3: with INVERT the last pass writes the pattern itself.
            let flip = if invert && (passes - 1 - pass) % 2 == 1 {
                0xFF
            } else {
                0
            };
            for (i, b) in buf.iter_mut().enumerate() {
                *b = pattern[(i % bs) % pattern.len()] ^ flip;
            }
            let mut at = 0;
            while at < end {
                self.sanitize_cancelled()?;
                let n = (end - at).min(buf.len() as u64) as usize;
                {
                    let _g = self.ranges.write(at..at + n as u64);
                    self.store.write_at(&buf[..n], at, false)?;
                }
                at += n as u64;
                let done = u64::from(pass) * end + at;
                let p = (done as u128 * 65536 / u128::from(total.max(1))).min(65535);
                self.sanitize.progress.store(p as u16, Ordering::Relaxed);
                if rate > 0 {
                    // The `sanitize-rate` property: no faster than `rate` bytes a second
                    // (in naps short enough to notice a cancellation).
                    let due = Duration::from_secs_f64(done as f64 / rate as f64);
                    while let Some(wait) = due.checked_sub(start.elapsed()) {
                        self.sanitize_cancelled()?;
                        std::thread::sleep(wait.min(Duration::from_millis(100)));
                    }
                }
            }
            // Each pass reaches the medium before the next one overwrites it.
            self.store.flush()?;
        }
        Ok(())
    }
}

impl SbdLu {
    fn sanitize_cancelled(&self) -> std::io::Result<()> {
        if self.sanitize.cancel.load(Ordering::Acquire) {
            return Err(std::io::Error::other(
                "interrupted: the LU was deleted or the provider stopped",
            ));
        }
        Ok(())
    }
}

/// The OVERWRITE parameter list (SBC-3 table 88).
fn overwrite_params(s: &[u8], block_size: usize) -> Result<Method, Fin> {
    let param =
        |byte: u16, bit: Option<u8>| Fin::Check(Sense::invalid_field_in_parameter_list(byte, bit));
    if s.len() < 4 {
        return Err(Fin::Check(Sense::illegal_request(
            Asc::PARAMETER_LIST_LENGTH_ERROR,
        )));
    }
    let invert = s[0] & 0x80 != 0;
    if s[0] & 0x60 != 0 {
        return Err(param(0, Some(6))); // TEST
    }
    let passes = s[0] & 0x1F;
    if passes == 0 {
        return Err(param(0, Some(4)));
    }
    let plen = usize::from(u16::from_be_bytes([s[2], s[3]]));
    if plen == 0 || plen > block_size {
        return Err(param(2, None));
    }
    if plen + 4 != s.len() {
        return Err(Fin::Check(Sense::illegal_request(
            Asc::PARAMETER_LIST_LENGTH_ERROR,
        )));
    }
    Ok(Method::Overwrite {
        pattern: s[4..].to_vec(),
        passes,
        invert,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overwrite_parameter_list() {
        let ok = overwrite_params(&[0x83, 0, 0, 2, 0xAB, 0xCD], 512).expect("valid");
        assert!(matches!(
            ok,
            Method::Overwrite { ref pattern, passes: 3, invert: true } if pattern == &[0xAB, 0xCD]
        ));
        let code = |r: Result<Method, Fin>| match r {
            Err(Fin::Check(s)) => (s.key, s.asc),
            _ => panic!("expected a CHECK CONDITION"),
        };
        let field = (
            SenseKey::ILLEGAL_REQUEST,
            Asc::INVALID_FIELD_IN_PARAMETER_LIST,
        );
        assert_eq!(
            code(overwrite_params(&[0x00, 0, 0, 1, 1], 512)),
            field,
            "no passes"
        );
        assert_eq!(
            code(overwrite_params(&[0x01, 0, 0, 0, 1], 512)),
            field,
            "empty pattern"
        );
        assert_eq!(
            code(overwrite_params(&[0x21, 0, 0, 1, 1], 512)),
            field,
            "TEST"
        );
        let mut big = vec![0x01, 0, 0x02, 0x01];
        big.resize(4 + 513, 0);
        assert_eq!(code(overwrite_params(&big, 512)), field, "pattern > block");
        assert_eq!(
            code(overwrite_params(&[0x01, 0, 0, 2, 1], 512)),
            (SenseKey::ILLEGAL_REQUEST, Asc::PARAMETER_LIST_LENGTH_ERROR),
            "pattern longer than the list"
        );
    }
}
