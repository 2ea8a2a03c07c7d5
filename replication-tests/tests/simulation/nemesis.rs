//! The nemesis: every fault and every write of a run, drawn from the seed.
//!
//! Faults are partitions (segments silently dropped: the session's stream is broken and
//! only keepalive notices), holds (segments queued, then delivered on release), link
//! drops (the consumer's connection fails with a reset), consumer crashes and provider
//! crashes (the host's tasks are dropped and its store is reopened from disk on
//! restart) and changelog trims (a consumer left behind reloads through a shadow).
//! Each lasts a drawn time; at most one link fault per consumer at a time.

use rand::rngs::StdRng;
use rand::Rng;

/// One fault, with the consumer it hits where it hits one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Drop everything between the provider and consumer `i`.
    Partition(usize),
    /// Queue everything between the provider and consumer `i` until healed.
    Hold(usize),
    /// Reset consumer `i`'s open connections (no heal needed).
    LinkDrop(usize),
    /// Crash consumer `i`; restart it when healed.
    CrashConsumer(usize),
    /// Crash the provider; restart it when healed.
    CrashProvider,
    /// Trim the provider's changelog to its newest `n` records (no heal): consumers
    /// further behind need a present refresh, which goes through a shadow.
    Trim(u64),
    /// The same trim (consumers behind reload), then a trim of the whole changelog at
    /// the first write while a consumer reloads (no heal): a reload's catch-up reads the
    /// changelog from where its scan began, which a trim must not take from under it.
    /// Trims at random moments almost never met a scan under way.
    TrimMidReload(u64),
}

/// What the nemesis wants done next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Inject a fault, healing it at `heal_at` ms (ignored for link drops).
    Inject(Fault, u64),
    /// Commit one change on the provider.
    Write,
}

/// The schedule of one run.
#[derive(Debug)]
pub struct Nemesis {
    consumers: usize,
    /// Faults and writes happen before this time; then everything is healed.
    pub chaos_until_ms: u64,
    next_fault_ms: u64,
    next_write_ms: u64,
}

impl Nemesis {
    /// A schedule over `consumers` consumers, with chaos for `chaos_ms`.
    pub fn new(consumers: usize, chaos_ms: u64, rng: &mut StdRng) -> Self {
        Self {
            consumers,
            chaos_until_ms: chaos_ms,
            next_fault_ms: rng.gen_range(200..1_500),
            next_write_ms: rng.gen_range(10..200),
        }
    }

    /// The actions due at `now_ms` (at most one fault and one write per call).
    pub fn due(&mut self, now_ms: u64, rng: &mut StdRng) -> Vec<Action> {
        let mut out = Vec::new();
        if now_ms >= self.chaos_until_ms {
            return out;
        }
        if now_ms >= self.next_write_ms {
            out.push(Action::Write);
            // Bursts and lulls: most gaps are short, some are long.
            self.next_write_ms =
                now_ms + if rng.gen_ratio(1, 8) { rng.gen_range(500..2_000) } else { rng.gen_range(5..150) };
        }
        if now_ms >= self.next_fault_ms {
            let i = rng.gen_range(0..self.consumers);
            let fault = match rng.gen_range(0..12) {
                0..=2 => Fault::Partition(i),
                3..=4 => Fault::Hold(i),
                5..=6 => Fault::LinkDrop(i),
                7..=8 => Fault::CrashConsumer(i),
                9 => Fault::CrashProvider,
                10 => Fault::Trim(rng.gen_range(0..8)),
                _ => Fault::TrimMidReload(rng.gen_range(0..8)),
            };
            let lasts = rng.gen_range(50..6_000);
            out.push(Action::Inject(fault, now_ms + lasts));
            self.next_fault_ms = now_ms + rng.gen_range(100..2_500);
        }
        out
    }
}
