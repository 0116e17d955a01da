//! `rstmf-bench`: an iSCSI load generator and data-integrity checker on the
//! `iscsi-initiator` library.
//!
//! ```text
//! rstmf-bench --url iscsi://HOST[:PORT]/IQN/LUN [--transport tcp]
//!             [--pattern randread|randwrite|read|write|verify] [--bs 4k] [--qd 32]
//!             [--sessions N] [--seconds S] [--json]
//! ```
//!
//! Progress goes to stderr once a second; the summary (or, with `--json`, one JSON
//! object) goes to stdout. Exit status: 0 success, 1 error, 2 verify mismatch.

mod hist;
mod verify;

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use iscsi_initiator::scsi::{self, sense_key, status};
use iscsi_initiator::{
    Completion, DigestMode, Error, IscsiUrl, LoginOptions, ScsiRequest, Session, TaskId,
};

use hist::Histogram;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Pattern {
    /// Random reads over the whole LU.
    Randread,
    /// Random writes over the whole LU.
    Randwrite,
    /// Sequential reads (each session its own part of the LU).
    Read,
    /// Sequential writes (each session its own part of the LU).
    Write,
    /// Checksummed writes and verifying reads (data-integrity test).
    Verify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DigestArg {
    /// No digests.
    None,
    /// CRC32C header and data digests.
    Crc32c,
}

/// iSCSI load generator and data-integrity checker.
#[derive(Debug, Parser)]
#[command(name = "rstmf-bench", version)]
struct Args {
    /// Target URL.
    #[arg(long, help = "Target URL: iscsi://[user%secret@]HOST[:PORT]/IQN/LUN")]
    url: String,
    /// Transport (only tcp for now).
    #[arg(long, default_value = "tcp")]
    transport: String,
    /// Access pattern.
    #[arg(long, value_enum, default_value_t = Pattern::Randread)]
    pattern: Pattern,
    /// I/O size (512, 4k, 64k, 1m, ...).
    #[arg(long, default_value = "4k", value_parser = parse_size)]
    bs: u64,
    /// Commands in flight per session.
    #[arg(long, default_value_t = 32)]
    qd: usize,
    /// Sessions (one thread each).
    #[arg(long, default_value_t = 1)]
    sessions: usize,
    /// Run time in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// Bytes of the LU the verify pattern uses (from LBA 0, split among sessions).
    #[arg(long, default_value = "64m", value_parser = parse_size)]
    verify_region: u64,
    /// Skip the final read-back of every block written by --pattern verify.
    #[arg(long)]
    no_final_verify: bool,
    /// Header and data digests.
    #[arg(long, value_enum, default_value_t = DigestArg::None)]
    digest: DigestArg,
    /// InitiatorName to log in with.
    #[arg(long)]
    initiator_name: Option<String>,
    /// No per-second progress lines.
    #[arg(long)]
    quiet: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_lowercase() {
                'k' => 1u64 << 10,
                'm' => 1 << 20,
                'g' => 1 << 30,
                'b' => 1,
                _ => return Err(format!("unknown size suffix in {s:?}")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("bad size {s:?}"))
}

/// Why a run failed.
#[derive(Debug)]
enum BenchError {
    /// Session or command failure.
    Io(String),
    /// Data did not verify.
    Verify { lba: u64, what: String },
}

impl From<Error> for BenchError {
    fn from(e: Error) -> Self {
        BenchError::Io(e.to_string())
    }
}

#[derive(Default)]
struct Stats {
    ops: AtomicU64,
    bytes: AtomicU64,
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ (u64::from(std::process::id()) << 32)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Write,
}

struct InFlight {
    start: Instant,
    slot: u64,
    op: Op,
    generation: u64,
}

struct VerifyState {
    gens: Vec<u64>,
    busy: Vec<bool>,
    run_id: u64,
    counter: u64,
    verified_blocks: u64,
}

struct Worker {
    session: Session,
    pattern: Pattern,
    bs: usize,
    block_size: usize,
    blocks_per_io: u32,
    first_lba: u64,
    slots: u64,
    qd: usize,
    rng: Rng,
    seq_next: u64,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    hist: Histogram,
    verify: Option<VerifyState>,
    template: Vec<u8>,
    retries: u64,
    final_verify: bool,
    /// Buffers handed back by completed reads and writes, reused (no per-I/O allocation).
    read_pool: Vec<Vec<u8>>,
    write_pool: Vec<Vec<u8>>,
}

struct WorkerResult {
    io_end: Instant,
    hist: Histogram,
    retries: u64,
    verified_blocks: u64,
    final_verified_blocks: u64,
}

impl Worker {
    fn lba(&self, slot: u64) -> u64 {
        self.first_lba + slot * u64::from(self.blocks_per_io)
    }

    fn pick(&mut self) -> Option<(u64, Op)> {
        match self.pattern {
            Pattern::Randread => Some((self.rng.below(self.slots), Op::Read)),
            Pattern::Randwrite => Some((self.rng.below(self.slots), Op::Write)),
            Pattern::Read | Pattern::Write => {
                let s = self.seq_next;
                self.seq_next = (s + 1) % self.slots;
                let op = if self.pattern == Pattern::Read {
                    Op::Read
                } else {
                    Op::Write
                };
                Some((s, op))
            }
            Pattern::Verify => {
                let v = self.verify.as_ref()?;
                for _ in 0..64 {
                    let s = self.rng.below(self.slots);
                    let i = s as usize;
                    if v.busy.get(i) == Some(&false) {
                        let written = v.gens.get(i).is_some_and(|&g| g != 0);
                        let op = if written && self.rng.next() & 1 == 0 {
                            Op::Read
                        } else {
                            Op::Write
                        };
                        return Some((s, op));
                    }
                }
                None
            }
        }
    }

    fn issue(
        &mut self,
        inflight: &mut HashMap<TaskId, InFlight>,
        slot: u64,
        op: Op,
    ) -> Result<(), BenchError> {
        let lba = self.lba(slot);
        let lun = self.session.lun();
        let mut generation = 0;
        let req = match op {
            Op::Read => {
                if let Some(v) = &mut self.verify {
                    generation = v.gens.get(slot as usize).copied().unwrap_or(0);
                }
                let buf = self.read_pool.pop().unwrap_or_default();
                ScsiRequest::read(lun, &scsi::read16(lba, self.blocks_per_io), self.bs as u32)
                    .with_buffer(buf)
            }
            Op::Write => {
                let pooled = self.write_pool.pop();
                let data = match &mut self.verify {
                    Some(v) => {
                        v.counter += 1;
                        generation = (v.run_id << 32) | v.counter;
                        let mut d = pooled.unwrap_or_default();
                        d.resize(self.bs, 0);
                        verify::fill(&mut d, self.block_size, lba, generation);
                        d
                    }
                    None => pooled.unwrap_or_else(|| self.template.clone()),
                };
                ScsiRequest::write(lun, &scsi::write16(lba, self.blocks_per_io, false), data)
            }
        };
        if let Some(b) = self
            .verify
            .as_mut()
            .and_then(|v| v.busy.get_mut(slot as usize))
        {
            *b = true;
        }
        let start = Instant::now();
        let id = self.session.submit(req)?;
        inflight.insert(
            id,
            InFlight {
                start,
                slot,
                op,
                generation,
            },
        );
        Ok(())
    }

    /// Handles one completion; `Ok(true)` when the same I/O must be issued again.
    fn complete(&mut self, f: &InFlight, c: Completion, count: bool) -> Result<bool, BenchError> {
        let lba = self.lba(f.slot);
        let r = c
            .result
            .map_err(|e| BenchError::Io(format!("LBA {lba}: {e}")))?;
        if r.status == status::CHECK_CONDITION
            && r.sense()
                .is_some_and(|s| s.key == sense_key::UNIT_ATTENTION)
        {
            self.retries += 1;
            return Ok(true);
        }
        let r = r
            .check()
            .map_err(|e| BenchError::Io(format!("LBA {lba}: {e}")))?;
        if count {
            let ns = f.start.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
            self.hist.record(ns);
            self.stats.ops.fetch_add(1, Ordering::Relaxed);
            self.stats
                .bytes
                .fetch_add(self.bs as u64, Ordering::Relaxed);
        }
        if let Some(v) = &mut self.verify {
            let i = f.slot as usize;
            if let Some(b) = v.busy.get_mut(i) {
                *b = false;
            }
            match f.op {
                Op::Write => {
                    if let Some(g) = v.gens.get_mut(i) {
                        *g = f.generation;
                    }
                }
                Op::Read => {
                    if r.data.len() != self.bs {
                        return Err(BenchError::Verify {
                            lba,
                            what: format!("read returned {} of {} bytes", r.data.len(), self.bs),
                        });
                    }
                    verify::check(&r.data, self.block_size, lba, f.generation).map_err(
                        |(bad, m)| BenchError::Verify {
                            lba: bad,
                            what: m.to_string(),
                        },
                    )?;
                    v.verified_blocks += u64::from(self.blocks_per_io);
                }
            }
        }
        match f.op {
            Op::Read => self.read_pool.push(r.data),
            Op::Write => self.write_pool.push(r.data_out),
        }
        Ok(false)
    }

    fn run(mut self) -> Result<WorkerResult, BenchError> {
        let mut inflight: HashMap<TaskId, InFlight> = HashMap::new();
        let mut done = Vec::with_capacity(self.qd);
        loop {
            let stopping = self.stop.load(Ordering::Relaxed);
            while !stopping && inflight.len() < self.qd {
                let Some((slot, op)) = self.pick() else { break };
                self.issue(&mut inflight, slot, op)?;
            }
            if inflight.is_empty() {
                if stopping {
                    break;
                }
                return Err(BenchError::Io(
                    "nothing to issue (region too small?)".into(),
                ));
            }
            done.clear();
            self.session
                .poll_completions(&mut done, Some(Duration::from_millis(200)))?;
            for c in done.drain(..) {
                let Some(f) = inflight.remove(&c.id) else {
                    continue;
                };
                if self.complete(&f, c, true)? {
                    self.issue(&mut inflight, f.slot, f.op)?;
                }
            }
        }
        let io_end = Instant::now();
        let verified_blocks = self.verify.as_ref().map_or(0, |v| v.verified_blocks);
        let final_verified_blocks = if self.final_verify {
            self.final_verify()?
        } else {
            0
        };
        let _ = self.session.logout();
        Ok(WorkerResult {
            io_end,
            hist: self.hist,
            retries: self.retries,
            verified_blocks,
            final_verified_blocks,
        })
    }

    /// Reads back every slot written by the verify pattern.
    fn final_verify(&mut self) -> Result<u64, BenchError> {
        let Some(v) = &self.verify else { return Ok(0) };
        let written: Vec<u64> = (0..self.slots)
            .filter(|&s| v.gens.get(s as usize).is_some_and(|&g| g != 0))
            .collect();
        let before = v.verified_blocks;
        let mut inflight: HashMap<TaskId, InFlight> = HashMap::new();
        let mut next = written.iter();
        let mut done = Vec::with_capacity(self.qd);
        loop {
            while inflight.len() < self.qd {
                let Some(&slot) = next.next() else { break };
                self.issue(&mut inflight, slot, Op::Read)?;
            }
            if inflight.is_empty() {
                break;
            }
            done.clear();
            self.session
                .poll_completions(&mut done, Some(Duration::from_millis(200)))?;
            for c in done.drain(..) {
                let Some(f) = inflight.remove(&c.id) else {
                    continue;
                };
                if self.complete(&f, c, false)? {
                    self.issue(&mut inflight, f.slot, f.op)?;
                }
            }
        }
        Ok(self.verify.as_ref().map_or(0, |v| v.verified_blocks) - before)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(BenchError::Io(e)) => {
            eprintln!("rstmf-bench: error: {e}");
            ExitCode::from(1)
        }
        Err(BenchError::Verify { lba, what }) => {
            eprintln!("rstmf-bench: VERIFY FAILED at LBA {lba}: {what}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<(), BenchError> {
    if args.transport != "tcp" {
        return Err(BenchError::Io(format!(
            "transport {:?} is not supported (only tcp)",
            args.transport
        )));
    }
    if args.qd == 0 || args.sessions == 0 || !args.seconds.is_finite() || args.seconds <= 0.0 {
        return Err(BenchError::Io(
            "--qd, --sessions and --seconds must be positive".into(),
        ));
    }
    let url = IscsiUrl::parse(&args.url).map_err(|e| BenchError::Io(e.to_string()))?;
    let digest = match args.digest {
        DigestArg::None => DigestMode::None,
        DigestArg::Crc32c => DigestMode::Crc32c,
    };
    let mut opts = LoginOptions {
        header_digest: digest,
        data_digest: digest,
        max_tasks: args.qd.max(16) * 2,
        ..LoginOptions::default()
    };
    if let Some(n) = &args.initiator_name {
        opts.initiator_name = n.clone();
    }

    let mut sessions = Vec::with_capacity(args.sessions);
    for _ in 0..args.sessions {
        sessions.push(Session::login(&url, &opts)?);
    }
    let cap = match sessions.first_mut() {
        Some(s) => s.read_capacity()?,
        None => return Err(BenchError::Io("no session".into())),
    };
    let block_size = cap.block_size as usize;
    let bs = usize::try_from(args.bs).map_err(|_| BenchError::Io("--bs too large".into()))?;
    if bs % block_size != 0 || u32::try_from(bs).is_err() {
        return Err(BenchError::Io(format!(
            "--bs {bs} must be a multiple of the block size {block_size}"
        )));
    }
    if args.pattern == Pattern::Verify && block_size < verify::MIN_BLOCK {
        return Err(BenchError::Io(
            "block size too small for --pattern verify".into(),
        ));
    }
    let blocks_per_io = (bs / block_size) as u32;
    let region = if args.pattern == Pattern::Verify {
        cap.bytes().min(args.verify_region)
    } else {
        cap.bytes()
    };
    let total_slots = region / bs as u64;
    let per_session = total_slots / args.sessions as u64;
    let sequential = matches!(
        args.pattern,
        Pattern::Read | Pattern::Write | Pattern::Verify
    );
    if per_session == 0 || (args.pattern == Pattern::Verify && per_session < 2 * args.qd as u64) {
        return Err(BenchError::Io(format!(
            "region of {region} bytes too small for {} session(s) of --qd {} at --bs {bs}",
            args.sessions, args.qd
        )));
    }

    let stats: Vec<Arc<Stats>> = (0..args.sessions).map(|_| Arc::default()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let base_seed = seed();
    let mut template = vec![0u8; bs];
    let mut r = Rng::new(base_seed);
    for c in template.chunks_mut(8) {
        let b = r.next().to_le_bytes();
        c.copy_from_slice(&b[..c.len()]);
    }

    if !args.json {
        println!(
            "rstmf-bench: {} pattern={:?} bs={bs} qd={} sessions={} seconds={} lu={} blocks x {block_size}",
            url,
            args.pattern,
            args.qd,
            args.sessions,
            args.seconds,
            cap.blocks
        );
    }
    let start = Instant::now();
    let mut handles = Vec::new();
    for (i, session) in sessions.into_iter().enumerate() {
        let (first_lba, slots) = if sequential {
            (
                i as u64 * per_session * u64::from(blocks_per_io),
                per_session,
            )
        } else {
            (0, total_slots)
        };
        let verify = (args.pattern == Pattern::Verify).then(|| VerifyState {
            gens: vec![0; slots as usize],
            busy: vec![false; slots as usize],
            run_id: (base_seed >> 8) & 0xffff_ff00 | i as u64 & 0xff,
            counter: 0,
            verified_blocks: 0,
        });
        let w = Worker {
            session,
            pattern: args.pattern,
            bs,
            block_size,
            blocks_per_io,
            first_lba,
            slots,
            qd: args.qd,
            rng: Rng::new(base_seed.rotate_left(i as u32 * 7 + 1) ^ i as u64),
            seq_next: 0,
            stats: stats[i].clone(),
            stop: stop.clone(),
            hist: Histogram::default(),
            verify,
            template: template.clone(),
            retries: 0,
            final_verify: !args.no_final_verify,
            read_pool: Vec::new(),
            write_pool: Vec::new(),
        };
        handles.push(std::thread::spawn(move || w.run()));
    }

    // Progress, once a second, until the time is up or every worker ended.
    let deadline = start + Duration::from_secs_f64(args.seconds);
    let total = |stats: &[Arc<Stats>]| {
        stats.iter().fold((0u64, 0u64), |(o, b), s| {
            (
                o + s.ops.load(Ordering::Relaxed),
                b + s.bytes.load(Ordering::Relaxed),
            )
        })
    };
    let mut last = (0u64, 0u64);
    let mut last_t = start;
    let mut tick = 1u64;
    loop {
        let now = Instant::now();
        if now >= deadline || handles.iter().all(|h| h.is_finished()) {
            break;
        }
        let next_tick = start + Duration::from_secs(tick);
        let wake = next_tick.min(deadline);
        std::thread::sleep(
            wake.saturating_duration_since(now)
                .min(Duration::from_millis(100)),
        );
        let now = Instant::now();
        if now >= next_tick {
            let cur = total(&stats);
            let dt = now.duration_since(last_t).as_secs_f64().max(1e-9);
            if !args.quiet {
                eprintln!(
                    "[{:>4}s] {:>9.0} IOPS {:>9.1} MiB/s",
                    tick,
                    (cur.0 - last.0) as f64 / dt,
                    (cur.1 - last.1) as f64 / dt / 1048576.0
                );
            }
            last = cur;
            last_t = now;
            tick += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);

    let mut hist = Histogram::default();
    let mut retries = 0;
    let mut verified = 0;
    let mut final_verified = 0;
    let mut first_err = None;
    let mut io_end = start;
    for h in handles {
        match h.join() {
            Ok(Ok(r)) => {
                io_end = io_end.max(r.io_end);
                hist.merge(&r.hist);
                retries += r.retries;
                verified += r.verified_blocks;
                final_verified += r.final_verified_blocks;
            }
            Ok(Err(e)) => {
                // A verify mismatch wins over other errors.
                if first_err.is_none() || matches!(e, BenchError::Verify { .. }) {
                    first_err = Some(e);
                }
            }
            Err(_) => first_err = first_err.or(Some(BenchError::Io("worker panicked".into()))),
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    let elapsed = io_end.duration_since(start).as_secs_f64().max(1e-9);
    let (ops, bytes) = total(&stats);
    let iops = ops as f64 / elapsed;
    let mibs = bytes as f64 / elapsed / 1048576.0;
    let us = |ns: u64| ns as f64 / 1000.0;
    let (p50, p99, p999) = (
        hist.quantile(0.5),
        hist.quantile(0.99),
        hist.quantile(0.999),
    );
    if args.json {
        let v = serde_json::json!({
            "url": url.to_string(),
            "pattern": format!("{:?}", args.pattern).to_lowercase(),
            "bs": bs,
            "qd": args.qd,
            "sessions": args.sessions,
            "seconds": elapsed,
            "ops": ops,
            "bytes": bytes,
            "iops": iops,
            "mib_per_s": mibs,
            "lat_us_min": us(hist.min()),
            "lat_us_avg": hist.mean() / 1000.0,
            "lat_us_p50": us(p50),
            "lat_us_p99": us(p99),
            "lat_us_p999": us(p999),
            "lat_us_max": us(hist.max()),
            "lat_samples": hist.count(),
            "unit_attention_retries": retries,
            "verified_blocks": verified + final_verified,
        });
        println!("{v}");
    } else {
        println!(
            "  ops {ops}  bytes {bytes}  elapsed {elapsed:.2} s  unit-attention retries {retries}"
        );
        println!("  IOPS {iops:.0}  MiB/s {mibs:.1}");
        println!(
            "  latency us: min {:.0} avg {:.0} p50 {:.0} p99 {:.0} p99.9 {:.0} max {:.0}",
            us(hist.min()),
            hist.mean() / 1000.0,
            us(p50),
            us(p99),
            us(p999),
            us(hist.max())
        );
        if args.pattern == Pattern::Verify {
            println!(
                "  verify: OK, {verified} blocks checked during the run, {final_verified} in the final read-back"
            );
        }
    }
    Ok(())
}
