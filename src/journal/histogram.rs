//! A fixed-size latency histogram in microseconds: buckets of about 19 %
//! width (four per power of two) from 1 µs to about an hour. Quantiles
//! are reported as the upper bound of their bucket.

/// Sub-buckets per power of two.
const SUB: u64 = 4;
/// Values below this are counted exactly (one bucket each).
const LINEAR: u64 = 8;
/// Powers of two covered above `LINEAR` (8 µs << 30 ≈ 2.4 h).
const POWERS: u64 = 30;
const BUCKETS: usize = (LINEAR + POWERS * SUB) as usize + 1;

#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            sum: 0,
            max: 0,
        }
    }
}

fn bucket_of(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let power = 63 - u64::from(v.leading_zeros()); // v >= 8, so power >= 3
    let sub = (v >> (power - 2)) & (SUB - 1);
    let idx = LINEAR + (power - 3) * SUB + sub;
    idx.min(BUCKETS as u64 - 1) as usize
}

/// The largest value that falls in bucket `i`.
fn upper_bound(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let k = i - LINEAR;
    let power = k / SUB + 3;
    let sub = k % SUB;
    let lo = (1u64 << power) + (sub << (power - 2));
    lo + (1u64 << (power - 2)) - 1
}

impl Histogram {
    pub fn record(&mut self, micros: u64) {
        self.counts[bucket_of(micros)] += 1;
        self.total += 1;
        self.sum = self.sum.saturating_add(micros);
        self.max = self.max.max(micros);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn mean(&self) -> u64 {
        self.sum.checked_div(self.total).unwrap_or(0)
    }

    /// The `q`-quantile (0..=1), as its bucket's upper bound (capped at max).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper_bound(i).min(self.max);
            }
        }
        self.max
    }

    /// `name_count=.. name_p50_us=.. name_p99_us=.. name_max_us=..` fields.
    pub fn fields(&self, name: &str) -> Vec<(String, String)> {
        vec![
            (format!("{name}_count"), self.total.to_string()),
            (format!("{name}_p50_us"), self.quantile(0.5).to_string()),
            (format!("{name}_p99_us"), self.quantile(0.99).to_string()),
            (format!("{name}_max_us"), self.max.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_bounded() {
        let mut prev = 0;
        for v in [
            0u64, 1, 7, 8, 9, 10, 11, 12, 15, 16, 100, 1000, 123_456, 10_000_000,
        ] {
            let b = bucket_of(v);
            assert!(b >= prev, "{v}");
            assert!(
                upper_bound(b) >= v,
                "{v} above its bucket {}",
                upper_bound(b)
            );
            if b > 0 {
                assert!(upper_bound(b - 1) < v, "{v}");
            }
            prev = b;
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_within_a_bucket() {
        let mut h = Histogram::default();
        for v in 1..=1000 {
            h.record(v);
        }
        let p50 = h.quantile(0.5);
        assert!((500..=600).contains(&p50), "{p50}");
        let p99 = h.quantile(0.99);
        assert!((990..=1000).contains(&p99), "{p99}");
        assert_eq!(h.max(), 1000);
        assert_eq!(Histogram::default().quantile(0.5), 0);
    }
}
