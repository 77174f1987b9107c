//! [`MembershipConfig`]: every protocol parameter, its unit, range and
//! default, and how the seed's `casty.toml` keys map onto it
//! ([`SeedTimings`]).
//!
//! | seed key (`casty.toml`)                         | SWIM parameter                                   |
//! |-------------------------------------------------|--------------------------------------------------|
//! | `[cluster.gossip] interval` (1.0 s)             | `push_pull_interval`: anti-entropy period        |
//! | `[cluster.heartbeat] interval` (0.5 s)          | `probe_interval`: the SWIM protocol period       |
//! | `[cluster.heartbeat] availability_check_interval` (2.0 s) | `suspicion_min` = a quarter of it: the suspicion timeout once confirmed by independent members, at N ≤ 10 (scaled by log10 N above) |
//! | `[cluster.failure_detector] threshold` (8.0)    | `suspicion_max_multiplier` = threshold: how much longer an unconfirmed suspicion waits |
//!
//! So with the seed's values a suspicion nobody confirms waits 4 s × log10 N
//! (at least 4 s), and one confirmed by `suspicion_confirmations` members
//! 0.5 s × log10 N (at least 0.5 s): a crash, which every prober
//! confirms, is declared within 3 s at 20 members, while a member that
//! misses one probe by accident (never confirmed) keeps 4-8 s to refute.
//!
//! The four seed-mapped fields are not keys of `[cluster.membership]`
//! (they are `#[serde(skip)]`): set them through the seed keys with
//! [`MembershipConfig::with_seed`]. Every other field is a key of
//! `[cluster.membership]` named with its unit.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::swim::MAX_UPDATES_PER_MESSAGE;

/// The seed's timing keys, in the seed's units (float seconds, and the phi
/// threshold). [`Default`] is the seed's `casty.toml`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedTimings {
    /// `[cluster.gossip] interval`, seconds (1.0).
    pub gossip_interval_s: f64,
    /// `[cluster.heartbeat] interval`, seconds (0.5).
    pub heartbeat_interval_s: f64,
    /// `[cluster.heartbeat] availability_check_interval`, seconds (2.0).
    pub availability_check_interval_s: f64,
    /// `[cluster.failure_detector] threshold`, the phi threshold (8.0).
    pub failure_detector_threshold: f64,
}

impl Default for SeedTimings {
    fn default() -> Self {
        SeedTimings {
            gossip_interval_s: 1.0,
            heartbeat_interval_s: 0.5,
            availability_check_interval_s: 2.0,
            failure_detector_threshold: 8.0,
        }
    }
}

/// Every parameter of the SWIM core. Durations set from the seed's keys
/// are [`Duration`]s (see the module table); the others are
/// `[cluster.membership]` keys ending in their unit.
///
/// [`Default`] equals `MembershipConfig::with_seed` applied to
/// [`SeedTimings::default`] and meets the detection goals (crash to dead
/// everywhere in a median 1.4-1.6 s at 3-20 real processes, p99 3.3 s
/// simulated at 20; a median 2 s at 100, under 5 s at 1,000; see
/// `README.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MembershipConfig {
    /// SWIM protocol period T: one probe per period (seed
    /// `[cluster.heartbeat] interval`; default 500 ms). Stretched by the
    /// local health multiplier.
    #[serde(skip)]
    pub probe_interval: Duration,
    /// Anti-entropy (push-pull) period (seed `[cluster.gossip] interval`;
    /// default 1 s).
    #[serde(skip)]
    pub push_pull_interval: Duration,
    /// Suspicion timeout floor for N ≤ 10, multiplied by log10(N) above:
    /// how long a suspicion confirmed by `suspicion_confirmations`
    /// independent members waits (a quarter of the seed's
    /// `availability_check_interval`; default 500 ms).
    #[serde(skip)]
    pub suspicion_min: Duration,
    /// Suspicion timeout ceiling as a multiple of the floor, reached when
    /// nobody confirms the suspicion (the seed's
    /// `[cluster.failure_detector] threshold`; default 8.0; 1.0..=64.0).
    #[serde(skip)]
    pub suspicion_max_multiplier: f64,

    /// How long a direct probe waits for its ack before asking others
    /// (default 200 ms; must be below `probe_interval`). Stretched by the
    /// local health multiplier.
    pub probe_timeout_ms: u64,
    /// k: members asked to probe indirectly after a direct probe fails
    /// (default 3; 0..=16).
    pub indirect_probes: u32,
    /// Lifeguard's K: independent confirmations that shrink a suspicion
    /// from its ceiling to its floor (default 2, as memberlist; 0..=16;
    /// capped at N − 2).
    pub suspicion_confirmations: u32,
    /// λ: each update is piggybacked λ·⌈log2(N+1)⌉ times (default 2;
    /// 1..=16).
    pub retransmit_multiplier: u32,
    /// Period of dissemination-only gossip while updates are pending
    /// (default 200 ms).
    pub gossip_interval_ms: u64,
    /// Members each gossip round sends pending updates to (default 3;
    /// 1..=16).
    pub gossip_fanout: u32,
    /// Every this many push-pull rounds, one goes to a member we hold
    /// dead (so partitions heal; default 3; 1..=1000).
    pub push_pull_dead_every: u32,
    /// Every this many push-pull rounds, one goes to a seed address that is
    /// not an alive member (so islands and healed partitions merge even
    /// after their dead entries were reaped; default 5; 1..=1000).
    pub push_pull_seed_every: u32,
    /// Dead and left members are forgotten this long after they entered
    /// that state (default 60 s; must exceed `probe_interval`).
    pub reap_after_ms: u64,
    /// First join retry delay; doubles per attempt (default 200 ms; at
    /// most `join_retry_max_ms`).
    pub join_retry_ms: u64,
    /// Largest join retry delay (default 1 s: below node-cli's 1.5 s settle
    /// period, so a node started before its seed joins before the seed,
    /// alone, settles and starts its run).
    pub join_retry_max_ms: u64,
    /// Joining gives up with `Event::JoinFailed` after this long (default
    /// 30 s).
    pub join_deadline_ms: u64,
    /// A leave completes when a member acknowledged our `Left`, or after
    /// this long (default 1 s).
    pub leave_timeout_ms: u64,
    /// Most updates waiting to be piggybacked; past it the most sent one is
    /// dropped (push-pull still carries it; default 128; 16..=1,048,576).
    pub max_queued_updates: usize,
    /// Largest member metadata, in bytes (default 512; at most 65,536).
    pub max_metadata_bytes: usize,
    /// Most updates piggybacked on one message (default 16; at most
    /// `MAX_UPDATES_PER_MESSAGE` = 64).
    pub max_piggyback_updates: usize,
    /// Byte budget of the piggybacked updates of one message (default
    /// 2,048; 512..=1 MiB).
    pub max_piggyback_bytes: usize,
    /// Byte budget of one `Sync`/`JoinAck` state (default 1 MiB;
    /// 4,096..=1 GiB). It must fit the transport's frame limit (`[transport]
    /// max_frame_bytes`, which node-cli checks it against).
    pub max_sync_bytes: usize,
    /// Most members held (alive, suspect, dead and left); new names past
    /// it are dropped and counted (default 16,384; 2..=16,777,216).
    pub max_members: usize,
    /// Lifeguard's S: the largest local health score; probe interval and
    /// timeout are multiplied by score + 1 (default 8; 0..=16).
    pub max_local_health: u32,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        let mut config = MembershipConfig {
            probe_interval: Duration::from_millis(500),
            push_pull_interval: Duration::from_secs(1),
            suspicion_min: Duration::from_millis(500),
            suspicion_max_multiplier: 8.0,
            probe_timeout_ms: 200,
            indirect_probes: 3,
            suspicion_confirmations: 2,
            retransmit_multiplier: 2,
            gossip_interval_ms: 200,
            gossip_fanout: 3,
            push_pull_dead_every: 3,
            push_pull_seed_every: 5,
            reap_after_ms: 60_000,
            join_retry_ms: 200,
            join_retry_max_ms: 1_000,
            join_deadline_ms: 30_000,
            leave_timeout_ms: 1_000,
            max_queued_updates: 128,
            max_metadata_bytes: 512,
            max_piggyback_updates: 16,
            max_piggyback_bytes: 2_048,
            max_sync_bytes: 1 << 20,
            max_members: 16_384,
            max_local_health: 8,
        };
        config.apply_seed_unchecked(&SeedTimings::default());
        config
    }
}

/// Longest accepted duration for any parameter: one day.
pub const MAX_DURATION: Duration = Duration::from_secs(86_400);

/// Largest `[cluster.failure_detector] threshold` (the suspicion
/// timeout's multiplier, `suspicion_max_multiplier`).
pub const MAX_THRESHOLD: f64 = 64.0;

/// Shortest accepted duration for any parameter: 1 ms. Shorter timers
/// would only spin (the drivers' clocks tick in ms).
pub const MIN_DURATION: Duration = Duration::from_millis(1);

/// A seed value in seconds as a duration.
///
/// # Errors
/// [`ConfigError::NotPositive`] for zero, a negative number or NaN;
/// [`ConfigError::DurationOutOfRange`] past [`MAX_DURATION`] (infinity
/// included) or below [`MIN_DURATION`].
fn seconds(key: &'static str, value: f64) -> Result<Duration, ConfigError> {
    if value.is_nan() || value <= 0.0 {
        return Err(ConfigError::NotPositive { key });
    }
    let d = Duration::try_from_secs_f64(value).unwrap_or(Duration::MAX);
    check_duration(key, d)?;
    Ok(d)
}

/// Checks `d` is within [`MIN_DURATION`]`..=`[`MAX_DURATION`].
fn check_duration(key: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::NotPositive { key });
    }
    if !(MIN_DURATION..=MAX_DURATION).contains(&d) {
        return Err(ConfigError::DurationOutOfRange {
            key,
            value: d,
            min: MIN_DURATION,
            max: MAX_DURATION,
        });
    }
    Ok(())
}

impl MembershipConfig {
    /// The default configuration with the seed-mapped fields taken from
    /// `seed` (see the module table).
    ///
    /// # Errors
    /// [`ConfigError::NotPositive`] for a non-positive or non-finite seed
    /// value, and anything [`MembershipConfig::validate`] rejects.
    pub fn from_seed(seed: &SeedTimings) -> Result<Self, ConfigError> {
        MembershipConfig::default().with_seed(seed)
    }

    /// Replaces the seed-mapped fields with values derived from `seed`
    /// and validates the result. `node-cli` deserializes
    /// `[cluster.membership]` and then calls this with the seed keys.
    ///
    /// # Errors
    /// As [`MembershipConfig::from_seed`].
    pub fn with_seed(mut self, seed: &SeedTimings) -> Result<Self, ConfigError> {
        self.probe_interval = seconds("cluster.heartbeat.interval", seed.heartbeat_interval_s)?;
        self.push_pull_interval = seconds("cluster.gossip.interval", seed.gossip_interval_s)?;
        // Checked as the user wrote it: a quarter of it must be a valid
        // duration too, so the value itself from 4 ms.
        let key = "cluster.heartbeat.availability_check_interval";
        let check = seconds(key, seed.availability_check_interval_s)?;
        if check < MIN_DURATION * 4 {
            return Err(ConfigError::DurationOutOfRange {
                key,
                value: check,
                min: MIN_DURATION * 4,
                max: MAX_DURATION,
            });
        }
        self.suspicion_min = check / 4;
        if !(1.0..=MAX_THRESHOLD).contains(&seed.failure_detector_threshold) {
            return Err(ConfigError::NumberOutOfRange {
                key: "cluster.failure_detector.threshold",
                value: seed.failure_detector_threshold,
                min: 1.0,
                max: MAX_THRESHOLD,
            });
        }
        self.suspicion_max_multiplier = seed.failure_detector_threshold;
        self.validate()?;
        Ok(self)
    }

    fn apply_seed_unchecked(&mut self, seed: &SeedTimings) {
        self.probe_interval = Duration::from_secs_f64(seed.heartbeat_interval_s);
        self.push_pull_interval = Duration::from_secs_f64(seed.gossip_interval_s);
        self.suspicion_min = Duration::from_secs_f64(seed.availability_check_interval_s / 4.0);
        self.suspicion_max_multiplier = seed.failure_detector_threshold;
    }

    /// `probe_timeout_ms` as a duration.
    pub fn probe_timeout(&self) -> Duration {
        Duration::from_millis(self.probe_timeout_ms)
    }

    /// `gossip_interval_ms` as a duration.
    pub fn gossip_interval(&self) -> Duration {
        Duration::from_millis(self.gossip_interval_ms)
    }

    /// `reap_after_ms` as a duration.
    pub fn reap_after(&self) -> Duration {
        Duration::from_millis(self.reap_after_ms)
    }

    /// `join_retry_ms` as a duration.
    pub fn join_retry(&self) -> Duration {
        Duration::from_millis(self.join_retry_ms)
    }

    /// `join_retry_max_ms` as a duration.
    pub fn join_retry_max(&self) -> Duration {
        Duration::from_millis(self.join_retry_max_ms)
    }

    /// `join_deadline_ms` as a duration.
    pub fn join_deadline(&self) -> Duration {
        Duration::from_millis(self.join_deadline_ms)
    }

    /// `leave_timeout_ms` as a duration.
    pub fn leave_timeout(&self) -> Duration {
        Duration::from_millis(self.leave_timeout_ms)
    }

    /// Lifeguard's suspicion bounds for a cluster of `n` members
    /// (including us): floor = `suspicion_min`·max(1, log10 n), ceiling =
    /// floor·`suspicion_max_multiplier` (arXiv 1707.00788 §IV-B).
    pub fn suspicion_bounds(&self, n: usize) -> (Duration, Duration) {
        let scale = (n.max(1) as f64).log10().max(1.0);
        let min = self.suspicion_min.mul_f64(scale);
        let max = min.mul_f64(self.suspicion_max_multiplier.max(1.0));
        (min, max)
    }

    /// How many times an update is piggybacked in a cluster of `n`
    /// members: λ·⌈log2(n+1)⌉.
    pub fn retransmit_limit(&self, n: usize) -> u32 {
        let log = ((n as f64) + 1.0).log2().ceil().max(1.0) as u32;
        self.retransmit_multiplier.saturating_mul(log)
    }

    /// Checks every invariant stated on the fields, and that every
    /// duration is positive and at most [`MAX_DURATION`] (one day).
    ///
    /// # Errors
    /// The first violated invariant, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let durations: [(&'static str, Duration); 10] = [
            ("cluster.heartbeat.interval", self.probe_interval),
            ("cluster.gossip.interval", self.push_pull_interval),
            (
                "cluster.heartbeat.availability_check_interval",
                self.suspicion_min,
            ),
            ("probe_timeout_ms", self.probe_timeout()),
            ("gossip_interval_ms", self.gossip_interval()),
            ("reap_after_ms", self.reap_after()),
            ("join_retry_ms", self.join_retry()),
            ("join_retry_max_ms", self.join_retry_max()),
            ("join_deadline_ms", self.join_deadline()),
            ("leave_timeout_ms", self.leave_timeout()),
        ];
        for (key, d) in durations {
            check_duration(key, d)?;
        }
        if self.probe_timeout() >= self.probe_interval {
            return Err(ConfigError::MustBeSmaller {
                key: "probe_timeout_ms",
                other: "cluster.heartbeat.interval",
                value: self.probe_timeout(),
                limit: self.probe_interval,
            });
        }
        if self.probe_interval >= self.reap_after() {
            return Err(ConfigError::MustBeSmaller {
                key: "cluster.heartbeat.interval",
                other: "reap_after_ms",
                value: self.probe_interval,
                limit: self.reap_after(),
            });
        }
        if self.join_retry() > self.join_retry_max() {
            return Err(ConfigError::MustNotExceed {
                key: "join_retry_ms",
                other: "join_retry_max_ms",
                value: self.join_retry(),
                limit: self.join_retry_max(),
            });
        }
        if !(1.0..=MAX_THRESHOLD).contains(&self.suspicion_max_multiplier) {
            return Err(ConfigError::NumberOutOfRange {
                key: "cluster.failure_detector.threshold",
                value: self.suspicion_max_multiplier,
                min: 1.0,
                max: MAX_THRESHOLD,
            });
        }
        let ranges: [(&'static str, u64, u64, u64); 13] = [
            (
                "max_queued_updates",
                self.max_queued_updates as u64,
                16,
                1 << 20,
            ),
            ("indirect_probes", self.indirect_probes.into(), 0, 16),
            (
                "suspicion_confirmations",
                self.suspicion_confirmations.into(),
                0,
                16,
            ),
            (
                "retransmit_multiplier",
                self.retransmit_multiplier.into(),
                1,
                16,
            ),
            ("gossip_fanout", self.gossip_fanout.into(), 1, 16),
            (
                "push_pull_dead_every",
                self.push_pull_dead_every.into(),
                1,
                1000,
            ),
            (
                "push_pull_seed_every",
                self.push_pull_seed_every.into(),
                1,
                1000,
            ),
            (
                "max_metadata_bytes",
                self.max_metadata_bytes as u64,
                0,
                65_536,
            ),
            (
                "max_piggyback_updates",
                self.max_piggyback_updates as u64,
                1,
                MAX_UPDATES_PER_MESSAGE as u64,
            ),
            (
                "max_piggyback_bytes",
                self.max_piggyback_bytes as u64,
                512,
                1 << 20,
            ),
            ("max_sync_bytes", self.max_sync_bytes as u64, 4_096, 1 << 30),
            ("max_members", self.max_members as u64, 2, 1 << 24),
            ("max_local_health", self.max_local_health.into(), 0, 16),
        ];
        for (key, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::OutOfRange {
                    key,
                    value,
                    min,
                    max,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_the_seed_mapping_and_valid() {
        let from_seed = MembershipConfig::from_seed(&SeedTimings::default());
        assert_eq!(from_seed, Ok(MembershipConfig::default()));
        assert_eq!(MembershipConfig::default().validate(), Ok(()));
    }

    #[test]
    fn seed_values_map_to_swim_parameters() {
        let seed = SeedTimings {
            gossip_interval_s: 2.0,
            heartbeat_interval_s: 1.0,
            availability_check_interval_s: 3.0,
            failure_detector_threshold: 10.0,
        };
        let c = MembershipConfig::from_seed(&seed).expect("valid");
        assert_eq!(c.push_pull_interval, Duration::from_secs(2));
        assert_eq!(c.probe_interval, Duration::from_secs(1));
        assert_eq!(c.suspicion_min, Duration::from_millis(750));
        assert_eq!(c.suspicion_max_multiplier, 10.0);
    }

    #[test]
    fn bad_values_are_named() {
        let seed = SeedTimings {
            heartbeat_interval_s: 0.0,
            ..SeedTimings::default()
        };
        assert_eq!(
            MembershipConfig::from_seed(&seed),
            Err(ConfigError::NotPositive {
                key: "cluster.heartbeat.interval"
            })
        );
        let c = MembershipConfig {
            probe_timeout_ms: 600,
            ..MembershipConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::MustBeSmaller {
                key: "probe_timeout_ms",
                ..
            })
        ));
    }

    #[test]
    fn seed_seconds_outside_1_ms_to_a_day_are_refused_with_their_bounds() {
        let gossip = |s: f64| {
            MembershipConfig::from_seed(&SeedTimings {
                gossip_interval_s: s,
                ..SeedTimings::default()
            })
        };
        let key = "cluster.gossip.interval";
        for s in [0.0, -1.0, f64::NAN, f64::NEG_INFINITY] {
            assert_eq!(gossip(s), Err(ConfigError::NotPositive { key }), "{s}");
        }
        for (s, value) in [
            (1e300, Duration::MAX),
            (f64::INFINITY, Duration::MAX),
            (86_401.0, Duration::from_secs(86_401)),
            (0.000_000_1, Duration::from_nanos(100)),
        ] {
            let e = gossip(s).expect_err("out of range");
            assert_eq!(
                e,
                ConfigError::DurationOutOfRange {
                    key,
                    value,
                    min: MIN_DURATION,
                    max: MAX_DURATION,
                },
                "{s}"
            );
            assert!(e.to_string().contains("within 1ms..=86400s"), "{e}");
        }
        assert!(gossip(0.001).is_ok());
        assert!(gossip(86_400.0).is_ok());
    }

    #[test]
    fn a_threshold_out_of_range_is_quoted_as_given() {
        for t in [0.5, 64.9, f64::INFINITY] {
            let e = MembershipConfig::from_seed(&SeedTimings {
                failure_detector_threshold: t,
                ..SeedTimings::default()
            })
            .expect_err("out of range");
            assert_eq!(
                e.to_string(),
                format!("`cluster.failure_detector.threshold` = {t} is outside 1..=64")
            );
        }
    }

    #[test]
    fn suspicion_scales_with_log_n() {
        let c = MembershipConfig::default();
        let (min3, max3) = c.suspicion_bounds(3);
        let (min1000, _) = c.suspicion_bounds(1000);
        assert_eq!(min3, Duration::from_millis(500));
        assert_eq!(max3, Duration::from_secs(4));
        assert_eq!(min1000, Duration::from_millis(1500));
        assert_eq!(c.retransmit_limit(1000), 20);
    }

    #[test]
    fn toml_like_keys_round_trip_without_seed_fields() {
        // postcard stands in for any serde format here.
        let c = MembershipConfig::default();
        let bytes = postcard::to_allocvec(&c).expect("encode");
        let back: MembershipConfig = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, c);
    }
}
