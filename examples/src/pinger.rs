//! The pinger's schedule and accounting, sans-IO: time is passed in, and what to send comes out
//! of [`Pinger::poll`]; the `memif_app` packet loop does the sending.
//!
//! Contract (what `--ping-count N --ping-size S` promise): from the first poll (the memif link is
//! up), one echo request every [`PING_INTERVAL`] (a neighbour resolution instead, while the
//! peer's MAC is unknown), until N distinct replies arrived or [`PING_DEADLINE`] passed; then
//! exactly one [`PingReport`], printed as `ping <peer ip> <received>/<sent>`. A request that never
//! left (the port refused it, see [`Pinger::unsend`]) is not counted as sent, as `ping` does not
//! count a send that failed.
//!
//! Nothing here allocates after [`Pinger::new`]: the set of answered sequence numbers is a
//! bitmap sized for the most requests the deadline allows.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Time between two echo requests (and between two neighbour resolutions), as `ping -i 0.1`.
pub const PING_INTERVAL: Duration = Duration::from_millis(100);

/// How long the pinger tries before it reports what it got.
pub const PING_DEADLINE: Duration = Duration::from_secs(15);

/// What to ping with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingSpec {
    /// Replies to wait for (at least 1).
    pub count: u32,
    /// ICMP echo payload bytes.
    pub size: usize,
}

/// The outcome, printed as `ping <peer> <received>/<sent>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingReport {
    /// Who was pinged.
    pub peer: IpAddr,
    /// Distinct echo replies received.
    pub received: u32,
    /// Echo requests sent.
    pub sent: u32,
}

impl fmt::Display for PingReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ping {} {}/{}", self.peer, self.received, self.sent)
    }
}

/// What the pinger wants now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PingAction {
    /// Send echo request number `seq` (1, 2, …) with the spec's payload size.
    Send(u16),
    /// Send a neighbour resolution (ARP request or NS) for the peer.
    Resolve,
    /// Nothing until this instant (or a reply).
    Wait(Instant),
    /// Finished: report this, once.
    Done(PingReport),
    /// Finished earlier: nothing more, ever.
    Idle,
}

/// See the module docs.
#[derive(Debug)]
pub struct Pinger {
    spec: PingSpec,
    peer: IpAddr,
    interval: Duration,
    deadline: Duration,
    start: Option<Instant>,
    next: Option<Instant>,
    sent: u32,
    received: u32,
    answered: Box<[u64]>,
    done: bool,
}

impl Pinger {
    /// A pinger of `peer`, with the standard interval and deadline.
    pub fn new(spec: PingSpec, peer: IpAddr) -> Self {
        Self::with_timing(spec, peer, PING_INTERVAL, PING_DEADLINE)
    }

    /// A pinger with its own interval and deadline (the interval is at least 1 ms).
    pub fn with_timing(
        spec: PingSpec,
        peer: IpAddr,
        interval: Duration,
        deadline: Duration,
    ) -> Self {
        let interval = interval.max(Duration::from_millis(1));
        // The most requests the deadline allows, plus the one sent at time zero; at most the
        // u16 sequence space.
        let most = (deadline.as_nanos() / interval.as_nanos() + 1).min(u128::from(u16::MAX));
        let words = usize::try_from(most / 64 + 1).unwrap_or(1024);
        Self {
            spec,
            peer,
            interval,
            deadline,
            start: None,
            next: None,
            sent: 0,
            received: 0,
            answered: vec![0u64; words].into_boxed_slice(),
            done: false,
        }
    }

    /// The spec.
    pub fn spec(&self) -> PingSpec {
        self.spec
    }

    /// True once polled for the first time.
    pub fn started(&self) -> bool {
        self.start.is_some()
    }

    /// True once the report was handed out.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The counts so far.
    pub fn report(&self) -> PingReport {
        PingReport {
            peer: self.peer,
            received: self.received,
            sent: self.sent,
        }
    }

    /// Takes an echo reply with sequence number `seq` and `len` payload bytes. Returns true if
    /// it counted: a request we sent, of the right size, not already answered.
    pub fn handle_reply(&mut self, seq: u16, len: usize) -> bool {
        if self.done || seq == 0 || u32::from(seq) > self.sent || len != self.spec.size {
            return false;
        }
        let bit = usize::from(seq - 1);
        let Some(w) = self.answered.get_mut(bit / 64) else {
            return false;
        };
        let mask = 1u64 << (bit % 64);
        if *w & mask != 0 {
            return false;
        }
        *w |= mask;
        self.received += 1;
        true
    }

    /// Takes back request `seq`, the last one [`Pinger::poll`] asked for, because it never left:
    /// the port refused it. For example, a memif ring is full until the peer posts its receive
    /// buffers, just after the link comes up. Like iputils `ping`, which counts only the sends
    /// that succeeded, it is not counted as sent, and the next request reuses its number.
    /// Returns true if it was taken back.
    pub fn unsend(&mut self, seq: u16) -> bool {
        if self.done || seq == 0 || u32::from(seq) != self.sent {
            return false;
        }
        self.sent -= 1;
        true
    }

    /// What to do at `now`; `resolved` says whether the peer's MAC is known (always true in IP
    /// mode). The first call starts the clock.
    #[must_use]
    pub fn poll(&mut self, now: Instant, resolved: bool) -> PingAction {
        if self.done {
            return PingAction::Idle;
        }
        let start = *self.start.get_or_insert(now);
        let end = start + self.deadline;
        if self.received >= self.spec.count || now >= end {
            self.done = true;
            return PingAction::Done(self.report());
        }
        let next = *self.next.get_or_insert(now);
        if now < next {
            return PingAction::Wait(next.min(end));
        }
        // No catching up after a stall: the next one is at most an interval from now.
        let after = next + self.interval;
        self.next = Some(if after <= now {
            now + self.interval
        } else {
            after
        });
        if !resolved {
            return PingAction::Resolve;
        }
        let capacity = self.answered.len() * 64;
        let Ok(seq) = u16::try_from(self.sent + 1) else {
            return PingAction::Wait(end);
        };
        if usize::from(seq) > capacity {
            return PingAction::Wait(end);
        }
        self.sent += 1;
        PingAction::Send(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(172, 16, 1, 101));

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn sends_every_interval_until_count_replies() {
        let t0 = Instant::now();
        let mut p = Pinger::new(PingSpec { count: 3, size: 56 }, PEER);
        assert!(!p.started());
        assert_eq!(p.poll(t0, true), PingAction::Send(1));
        assert!(p.started());
        assert_eq!(p.poll(t0 + ms(50), true), PingAction::Wait(t0 + ms(100)));
        assert!(p.handle_reply(1, 56));
        assert!(!p.handle_reply(1, 56), "a duplicate does not count");
        assert!(!p.handle_reply(2, 56), "not sent yet");
        assert!(!p.handle_reply(0, 56));
        assert_eq!(p.poll(t0 + ms(100), true), PingAction::Send(2));
        assert!(!p.handle_reply(2, 57), "wrong size");
        assert_eq!(p.poll(t0 + ms(200), true), PingAction::Send(3));
        assert!(p.handle_reply(3, 56));
        assert!(p.handle_reply(2, 56), "late but counted");
        let done = p.poll(t0 + ms(210), true);
        assert_eq!(
            done,
            PingAction::Done(PingReport {
                peer: PEER,
                received: 3,
                sent: 3
            })
        );
        if let PingAction::Done(r) = done {
            assert_eq!(r.to_string(), "ping 172.16.1.101 3/3");
        }
        assert_eq!(p.poll(t0 + ms(300), true), PingAction::Idle);
        assert!(p.is_done());
    }

    #[test]
    fn a_request_that_never_left_is_not_counted() {
        let t0 = Instant::now();
        let mut p = Pinger::new(PingSpec { count: 1, size: 8 }, PEER);
        assert_eq!(p.poll(t0, true), PingAction::Send(1));
        assert!(!p.unsend(2), "not the last one");
        assert!(p.unsend(1));
        assert!(!p.unsend(1), "only once");
        assert!(!p.handle_reply(1, 8), "not sent");
        assert_eq!(p.report().sent, 0);
        assert_eq!(p.poll(t0 + ms(100), true), PingAction::Send(1), "reused");
        assert!(p.handle_reply(1, 8));
        assert_eq!(
            p.poll(t0 + ms(101), true),
            PingAction::Done(PingReport {
                peer: PEER,
                received: 1,
                sent: 1
            })
        );
        assert!(!p.unsend(1), "done");
    }

    #[test]
    fn resolves_first_then_gives_up_at_the_deadline() {
        let t0 = Instant::now();
        let mut p = Pinger::with_timing(PingSpec { count: 5, size: 8 }, PEER, ms(100), ms(1000));
        assert_eq!(p.poll(t0, false), PingAction::Resolve);
        assert_eq!(p.poll(t0 + ms(10), false), PingAction::Wait(t0 + ms(100)));
        assert_eq!(p.poll(t0 + ms(100), false), PingAction::Resolve);
        // A stall of 500 ms does not make it fire five times in a row.
        assert_eq!(p.poll(t0 + ms(700), true), PingAction::Send(1));
        assert!(matches!(p.poll(t0 + ms(701), true), PingAction::Wait(_)));
        assert_eq!(p.poll(t0 + ms(800), true), PingAction::Send(2));
        assert!(p.handle_reply(2, 8));
        assert_eq!(
            p.poll(t0 + ms(1000), true),
            PingAction::Done(PingReport {
                peer: PEER,
                received: 1,
                sent: 2
            })
        );
    }

    #[test]
    fn the_bitmap_covers_every_request_the_deadline_allows() {
        let t0 = Instant::now();
        let mut p = Pinger::with_timing(
            PingSpec {
                count: 1000,
                size: 0,
            },
            PEER,
            ms(1),
            ms(200),
        );
        let mut sent = 0;
        for i in 0..200 {
            if let PingAction::Send(seq) = p.poll(t0 + ms(i), true) {
                sent += 1;
                assert!(p.handle_reply(seq, 0));
            }
        }
        assert_eq!(sent, 200);
        assert_eq!(p.report().received, 200);
    }
}
