//! The measurement behind docs/sbd.md ("Worker pool, not io_uring"). Not built with the
//! workspace (it needs the `io-uring` crate): copy it to `src/main.rs` of a scratch crate
//! with `io-uring = "0.7"` and `libc = "0.2"`, `cargo run --release -- <file on the disk
//! to test>`.
use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::fd::AsRawFd;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Instant;

const BS: usize = 4096;

fn rng(mut x: u64) -> impl FnMut() -> u64 { move || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x } }

struct Q { jobs: Mutex<VecDeque<(u64, usize)>>, cv: Condvar }

fn pool(path: &str, size: u64, ops: usize, depth: usize, workers: usize, write: bool, dsync: bool) -> f64 {
    let f = Arc::new(OpenOptions::new().read(true).write(true).custom_flags(if dsync { libc::O_DSYNC } else { 0 }).open(path).unwrap());
    let qs: Arc<Vec<Q>> = Arc::new((0..workers).map(|_| Q { jobs: Mutex::new(VecDeque::new()), cv: Condvar::new() }).collect());
    let (done_tx, done_rx) = mpsc::channel::<usize>();
    let mut hs = Vec::new();
    for i in 0..workers {
        let (qs, f, tx) = (qs.clone(), f.clone(), done_tx.clone());
        hs.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; BS];
            loop {
                let job = { let mut j = qs[i].jobs.lock().unwrap(); loop { if let Some(x) = j.pop_front() { break x } j = qs[i].cv.wait(j).unwrap(); } };
                if job.1 == usize::MAX { return }
                if write { f.write_all_at(&buf, job.0).unwrap() } else { f.read_exact_at(&mut buf, job.0).unwrap() }
                tx.send(job.1).unwrap();
            }
        }));
    }
    let mut r = rng(0x1234567);
    let blocks = size / BS as u64;
    let t = Instant::now();
    let mut next = 0usize;
    let mut submitted = 0;
    let mut rr = 0;
    let mut submit = |n: usize, submitted: &mut usize| { for _ in 0..n { let q = &qs[rr % workers]; rr += 1; q.jobs.lock().unwrap().push_back(((r() % blocks) * BS as u64, *submitted)); q.cv.notify_one(); *submitted += 1; } };
    submit(depth.min(ops), &mut submitted);
    while next < ops { done_rx.recv().unwrap(); next += 1; if submitted < ops { submit(1, &mut submitted); } }
    let el = t.elapsed().as_secs_f64();
    for q in qs.iter() { q.jobs.lock().unwrap().push_back((0, usize::MAX)); q.cv.notify_all(); }
    for h in hs { h.join().unwrap(); }
    ops as f64 / el
}

fn uring(path: &str, size: u64, ops: usize, depth: usize, write: bool, dsync: bool) -> Result<f64, String> {
    use io_uring::{opcode, types, IoUring};
    let f = OpenOptions::new().read(true).write(true).custom_flags(if dsync { libc::O_DSYNC } else { 0 }).open(path).unwrap();
    let mut ring = IoUring::new(depth as u32 * 2).map_err(|e| format!("io_uring_setup: {e}"))?;
    let mut bufs: Vec<Vec<u8>> = (0..depth).map(|_| vec![0u8; BS]).collect();
    let mut r = rng(0x1234567);
    let blocks = size / BS as u64;
    let fd = types::Fd(f.as_raw_fd());
    let t = Instant::now();
    let (mut submitted, mut done) = (0usize, 0usize);
    let mut free: Vec<usize> = (0..depth).collect();
    while done < ops {
        while submitted < ops { let Some(i) = free.pop() else { break }; let off = (r() % blocks) * BS as u64;
            let e = if write { opcode::Write::new(fd, bufs[i].as_ptr(), BS as u32).offset(off).build() } else { opcode::Read::new(fd, bufs[i].as_mut_ptr(), BS as u32).offset(off).build() };
            unsafe { ring.submission().push(&e.user_data(i as u64)).map_err(|e| e.to_string())? }; submitted += 1; }
        ring.submit_and_wait(1).map_err(|e| e.to_string())?;
        for c in ring.completion() { if c.result() < 0 { return Err(format!("cqe {}", c.result())) } free.push(c.user_data() as usize); done += 1; }
    }
    let _ = &mut bufs;
    Ok(ops as f64 / t.elapsed().as_secs_f64())
}

fn main() {
    let path = std::env::args().nth(1).unwrap_or("/tmp/uring-bench.img".into());
    let size: u64 = 256 << 20;
    { let f = OpenOptions::new().create(true).read(true).write(true).open(&path).unwrap(); f.set_len(size).unwrap(); let b = vec![1u8; 1 << 20]; for i in 0..256 { f.write_all_at(&b, i << 20).unwrap(); } f.sync_all().unwrap(); }
    for (name, write, dsync, ops) in [("read 4K (page cache)", false, false, 400_000), ("write 4K (page cache)", true, false, 400_000), ("write 4K O_DSYNC", true, true, 4_000)] {
        for depth in [1usize, 32] {
            let p4 = pool(&path, size, ops, depth, 4, write, dsync);
            let p8 = pool(&path, size, ops, depth, 8, write, dsync);
            let u = uring(&path, size, ops, depth, write, dsync);
            println!("{name:24} qd{depth:<3} pool(4) {p4:>10.0} IOPS  pool(8) {p8:>10.0} IOPS  io_uring {} ", match u { Ok(v) => format!("{v:>10.0} IOPS"), Err(e) => e });
        }
    }
}
