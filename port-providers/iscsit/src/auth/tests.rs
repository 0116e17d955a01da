//! The throttle with a virtual clock.

use super::*;
use std::net::Ipv6Addr;

fn cfg() -> ThrottleConfig {
    ThrottleConfig {
        threshold: 3,
        backoff: Duration::from_secs(1),
        backoff_max: Duration::from_secs(8),
        forget: Duration::from_secs(60),
        capacity: 4,
    }
}

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

#[test]
fn identity_rules() {
    use Identity::*;
    assert!(Trusted.name_honoured() && Proven.name_honoured());
    assert!(!SharedSecret.name_honoured());
    // A proven session is taken over only by a login that proves the name again.
    assert!(Proven.may_take_over(Proven));
    assert!(!SharedSecret.may_take_over(Proven));
    assert!(!Trusted.may_take_over(Proven));
    // Everything else: any login of the same nexus (shared-secret hosts are one
    // principal; trusted names are trusted).
    for new in [Trusted, Proven, SharedSecret] {
        for old in [Trusted, SharedSecret] {
            assert!(new.may_take_over(old), "{new} over {old}");
        }
    }
    assert_eq!(
        serde_json::to_string(&SharedSecret).unwrap(),
        "\"shared-secret\""
    );
}

#[test]
fn sources_group_ipv6_by_64() {
    let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
    let b: IpAddr = "2001:db8:1:2:bbbb::7".parse().unwrap();
    let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
    assert_eq!(Source::of(a), Source::of(b));
    assert_ne!(Source::of(a), Source::of(c));
    assert_eq!(Source::of(a).to_string(), "2001:db8:1:2::/64");
    let mapped = IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped());
    assert_eq!(Source::of(mapped), Source::V4(Ipv4Addr::new(10, 1, 2, 3)));
    assert_eq!(Source::of(mapped).to_string(), "10.1.2.3");
    assert_eq!(
        Source::of(IpAddr::V6(Ipv6Addr::LOCALHOST)).to_string(),
        "::/64"
    );
}

#[test]
fn backoff_doubles_from_the_threshold_up_to_the_cap() {
    let c = cfg();
    let got: Vec<u64> = (1..=8).map(|n| c.backoff_after(n).as_secs()).collect();
    assert_eq!(got, [0, 0, 1, 2, 4, 8, 8, 8]);
    assert_eq!(c.backoff_after(u32::MAX), Duration::from_secs(8));
}

#[test]
fn failures_throttle_one_source_and_not_another() {
    let c = cfg();
    let mut t = AuthThrottle::new();
    let t0 = Instant::now();
    let (bad, good) = (v4(2), v4(1));
    for n in 1..=2 {
        let note = t.failed(&c, bad, "iqn.x:victim", t0);
        assert_eq!((note.streak, note.throttled_for), (n, None));
        assert_eq!(t.check(bad, t0), None, "below the threshold");
    }
    let note = t.failed(&c, bad, "iqn.x:victim", t0);
    assert_eq!(note.throttled_for, Some(Duration::from_secs(1)));
    assert_eq!(t.check(bad, t0), Some(Duration::from_secs(1)));
    assert_eq!(
        t.check(bad, t0 + Duration::from_millis(400)),
        Some(Duration::from_millis(600))
    );
    assert_eq!(t.check(good, t0), None, "another source is not affected");
    // The block ends; the next failure doubles it.
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(t.check(bad, t1), None);
    assert_eq!(
        t.failed(&c, bad, "iqn.x:victim", t1).throttled_for,
        Some(Duration::from_secs(2))
    );
    // A success does not clear the streak.
    t.succeeded();
    let t2 = t1 + Duration::from_secs(2);
    assert_eq!(
        t.failed(&c, bad, "iqn.x:victim", t2).throttled_for,
        Some(Duration::from_secs(4))
    );
    let s = t.stats(&c, t2);
    assert_eq!(
        (s.failures_total, s.refused_total, s.successes_total),
        (5, 2, 1)
    );
    assert_eq!((s.sources_tracked, s.sources_throttled), (1, 1));
    let src = &s.sources[0];
    assert_eq!(src.source, "127.0.0.2");
    assert_eq!((src.failures, src.consecutive, src.refused), (5, 5, 2));
    assert!(src.throttled && src.throttled_for_ms == 4000);
    assert_eq!(src.last_initiator, "iqn.x:victim");
    // Quiet for `forget` (after the block): the source starts afresh and leaves.
    let later = t2 + Duration::from_secs(4) + c.forget;
    assert_eq!(t.failed(&c, bad, "iqn.x:victim", later).streak, 1);
    let s = t.stats(&c, later + c.forget);
    assert_eq!(s.sources_tracked, 0);
    assert_eq!(s.failures_total, 6, "totals outlive the sources");
}

#[test]
fn the_table_is_bounded_and_evicts_the_stalest_unthrottled_source() {
    let c = cfg();
    let mut t = AuthThrottle::new();
    let t0 = Instant::now();
    // Source 10 is throttled; 11..13 have one failure each, 11 the oldest.
    for _ in 0..3 {
        t.failed(&c, v4(10), "a", t0);
    }
    for (i, last) in [11u8, 12, 13].into_iter().enumerate() {
        t.failed(&c, v4(last), "b", t0 + Duration::from_millis(10 * i as u64));
    }
    assert_eq!(t.len(), 4);
    t.failed(&c, v4(14), "c", t0 + Duration::from_millis(100));
    assert_eq!(t.len(), 4);
    let s = t.stats(&c, t0 + Duration::from_millis(100));
    let names: Vec<&str> = s.sources.iter().map(|s| s.source.as_str()).collect();
    assert!(!names.contains(&"127.0.0.11"), "{names:?}");
    assert!(
        names.contains(&"127.0.0.10"),
        "a throttled source stays: {names:?}"
    );
    assert_eq!(s.sources_evicted, 1);
    // Thousands of sources never grow the table.
    for i in 0..5000u32 {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        t.failed(&c, ip, "d", t0 + Duration::from_millis(200));
    }
    assert_eq!(t.len(), 4);
}

#[test]
fn log_lines_are_rate_limited() {
    let c = ThrottleConfig {
        threshold: 1000,
        ..cfg()
    };
    let mut t = AuthThrottle::new();
    let t0 = Instant::now();
    assert_eq!(t.failed(&c, v4(2), "x", t0).log, Some(0));
    for i in 1..=5 {
        assert_eq!(
            t.failed(&c, v4(2), "x", t0 + Duration::from_secs(i)).log,
            None
        );
    }
    // After LOG_INTERVAL the next line reports the 5 left out.
    assert_eq!(t.failed(&c, v4(2), "x", t0 + LOG_INTERVAL).log, Some(5));
    // All sources together: at most LOG_LINES_PER_SECOND lines a second.
    let t1 = t0 + Duration::from_secs(100);
    let logged = (0..100u32)
        .filter(|i| {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i));
            t.failed(&c, ip, "y", t1).log.is_some()
        })
        .count();
    assert_eq!(logged, LOG_LINES_PER_SECOND as usize);
}

#[test]
fn names_kept_for_statistics_are_bounded_and_printable() {
    let c = cfg();
    let mut t = AuthThrottle::new();
    let now = Instant::now();
    let long = format!("iqn.x:{}\u{7}\n", "a".repeat(1000));
    t.failed(&c, v4(3), &long, now);
    let s = t.stats(&c, now);
    assert_eq!(s.sources[0].last_initiator.chars().count(), 223);
    assert!(!s.sources[0].last_initiator.chars().any(char::is_control));
}
