//! A log-linear latency histogram in the style of HdrHistogram: 128 linear
//! sub-buckets per power of two, so any recorded value is within 0.8 % of the value
//! reported for its bucket. Fixed size, no allocation while recording.

const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;

/// Latency histogram in nanoseconds.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros();
    let shift = exp - SUB_BITS;
    ((shift as u64 + 1) * SUB + ((v >> shift) - SUB)) as usize
}

/// The middle of bucket `i`.
fn value_at(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = i / SUB - 1;
    let base = (SUB + i % SUB) << shift;
    base + ((1u64 << shift) >> 1)
}

impl Histogram {
    /// Records one value.
    pub fn record(&mut self, ns: u64) {
        if let Some(c) = self.counts.get_mut(index(ns)) {
            *c += 1;
        }
        self.total += 1;
        self.sum += u128::from(ns);
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.total += o.total;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=1), 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return value_at(i).clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// Smallest value (0 when empty).
    pub fn min(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            self.min
        }
    }

    /// Largest value.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Mean value.
    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_tight() {
        for v in [
            0u64,
            1,
            127,
            128,
            129,
            1000,
            12_345,
            1 << 20,
            987_654_321,
            u64::MAX / 3,
        ] {
            let mid = value_at(index(v));
            let err = (mid as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err < 0.008, "{v} -> {mid}");
        }
        assert!(index(u64::MAX) < BUCKETS);
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5);
        assert!((495_000..=505_000).contains(&p50), "{p50}");
        let p99 = h.quantile(0.99);
        assert!((982_000..=998_000).contains(&p99), "{p99}");
        assert_eq!(h.quantile(1.0), 1_000_000);
        assert_eq!(h.min(), 1000);
        let mut g = Histogram::default();
        g.merge(&h);
        assert_eq!(g.count(), 1000);
        assert_eq!(Histogram::default().quantile(0.5), 0);
    }
}
