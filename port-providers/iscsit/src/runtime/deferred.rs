//! Calls into the core made after the connection lock is released.
//!
//! The core calls back into the port from inside its own entry points (a RAM LU moves
//! data and sends status from inside `post_task`), so the port never calls the core while
//! it holds a connection lock. Work done under the lock queues [`Act`]s on a per-thread
//! queue; the outermost [`Frame`] on the thread runs them once the lock is gone, in
//! order. Nested calls queue to the same list, which also bounds the stack depth of a
//! long read that the LU and the port bounce between them.

use plugins_sdk::{DataBuf, Host, Status, TaskHandle, UnpostedTask};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

/// One deferred call into the core.
pub enum Act {
    /// `post_task`.
    Post(Host, UnpostedTask, Option<DataBuf>),
    /// `data_xfer_done`.
    XferDone(Host, TaskHandle, DataBuf, Status),
    /// `send_status_done`.
    StatusDone(Host, TaskHandle, Status),
    /// `lport_aborted`.
    LportAborted(Host, TaskHandle, Status),
    /// Anything else (rare paths: session teardown, reinstatement).
    Call(Box<dyn FnOnce() + Send>),
}

impl Act {
    fn run(self) {
        match self {
            Act::Post(h, t, b) => h.post_task(t, b),
            Act::XferDone(h, t, b, s) => h.data_xfer_done(&t, b, s),
            Act::StatusDone(h, t, s) => h.send_status_done(t, s),
            Act::LportAborted(h, t, s) => h.lport_aborted(t, s),
            Act::Call(f) => f(),
        }
    }
}

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    static QUEUE: RefCell<VecDeque<Act>> = RefCell::new(VecDeque::with_capacity(64));
}

/// Queues `act` to run when the outermost frame on this thread ends (at once when there
/// is no frame).
pub fn defer(act: Act) {
    QUEUE.with(|q| q.borrow_mut().push_back(act));
    if DEPTH.with(Cell::get) == 0 {
        let _f = Frame::enter();
    }
}

/// A scope during which core calls are deferred. Create it before taking a connection
/// lock; drop it after releasing the lock.
#[must_use = "deferred calls run when the frame is dropped"]
pub struct Frame(());

impl Frame {
    /// Enters a frame.
    pub fn enter() -> Frame {
        DEPTH.with(|d| d.set(d.get() + 1));
        Frame(())
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        if DEPTH.with(Cell::get) > 1 {
            DEPTH.with(|d| d.set(d.get() - 1));
            return;
        }
        if std::thread::panicking() {
            DEPTH.with(|d| d.set(0));
            return;
        }
        // Outermost: run the queue, staying at depth 1 so that calls made by the core
        // from inside queue up instead of recursing. What an act queues runs before the
        // acts queued earlier (depth first: the order direct calls would have had), so
        // a status completes before a TMF posted after its command looks for it.
        while let Some(act) = QUEUE.with(|q| q.borrow_mut().pop_front()) {
            let before = QUEUE.with(|q| q.borrow().len());
            act.run();
            QUEUE.with(|q| {
                let mut q = q.borrow_mut();
                let added = q.len().saturating_sub(before);
                q.rotate_right(added);
            });
        }
        DEPTH.with(|d| d.set(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn nested_frames_run_in_order_after_the_outermost() {
        let log = Arc::new(Mutex::new(Vec::new()));
        {
            let _outer = Frame::enter();
            let l = log.clone();
            defer(Act::Call(Box::new(move || {
                // A call made by the "core" from inside queues behind us.
                let _inner = Frame::enter();
                let l2 = l.clone();
                defer(Act::Call(Box::new(move || l2.lock().unwrap().push("3"))));
                l.lock().unwrap().push("2");
            })));
            log.lock().unwrap().push("1");
        }
        assert_eq!(*log.lock().unwrap(), ["1", "2", "3"]);
        // Depth first: what an act queues runs before acts queued earlier.
        log.lock().unwrap().clear();
        {
            let _outer = Frame::enter();
            let l = log.clone();
            defer(Act::Call(Box::new(move || {
                let _inner = Frame::enter();
                let l2 = l.clone();
                defer(Act::Call(Box::new(move || {
                    l2.lock().unwrap().push("a-child")
                })));
                l.lock().unwrap().push("a");
            })));
            let l = log.clone();
            defer(Act::Call(Box::new(move || l.lock().unwrap().push("b"))));
        }
        assert_eq!(*log.lock().unwrap(), ["a", "a-child", "b"]);
        log.lock().unwrap().clear();
        // Without a frame a deferred call runs at once.
        let l = log.clone();
        defer(Act::Call(Box::new(move || l.lock().unwrap().push("now"))));
        assert_eq!(*log.lock().unwrap(), ["now"]);
    }
}
