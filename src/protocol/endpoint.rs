//! What both endpoint roles share: parameters, the codec, our epoch, the control sequence,
//! the outbox and its buffer pool, counters, timers and events ([`Core`]), and what drivers
//! take from an endpoint of either role ([`Endpoint`]). Client and server wrap the core
//! with their own routing (where packets come from and go to); `D` is the role's
//! destination type.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use log::warn;

use super::crypto::Codec;
use super::event::Event;
use super::fresh::SendHistory;
use super::packet::{
    Challenge, DecodeError, Header, PacketType, Probe, ProbeAck, Response, Sender, CHALLENGE_LEN,
    CONTROL_SESSION, PROBE_ACK_LEN, RESPONSE_LEN,
};
use super::params::Params;
use super::path::PathStats;
use super::peer::Refusal;
use super::secure_rng::{SecureRng, Seed};
use super::stats::{Counters, Stats};
use super::timer::TimerTable;
use super::transmit::{BufPool, Transmit};
use super::RateLimit;

/// Warnings that could repeat per packet come at most this often.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(10);

/// The shared part of an endpoint (opaque outside the protocol layer).
#[derive(Debug)]
pub struct Core<D> {
    pub(crate) params: Params,
    pub(crate) codec: Codec,
    pub(crate) epoch: u64,
    /// Epochs, ids, tokens and nonces: unpredictable from anything on the wire.
    pub(crate) rng: SecureRng,
    pub(crate) start: Instant,
    /// The next DATA/CLOSE sequence: one counter for every session of this epoch, so that
    /// a peer keeps one window per epoch and nonces never repeat.
    next_seq: u64,
    /// What was sent when, to answer challenges.
    history: SendHistory,
    pub(crate) counters: Counters,
    pub(crate) timers: TimerTable,
    control_seq: u64,
    out: VecDeque<Transmit<D>>,
    events: VecDeque<Event>,
    pool: BufPool,
    scratch: Vec<u8>,
    last_cap_warn: RateLimit,
    last_auth_warn: RateLimit,
    last_version_warn: RateLimit,
}

impl<D> Core<D> {
    /// A new endpoint core of `role`; `seed` drives its epoch, ids, tokens and nonces.
    pub(crate) fn new(params: Params, role: Sender, seed: &Seed, now: Instant) -> Self {
        let mut rng = SecureRng::new(seed);
        let epoch = rng.nonzero_u64();
        let codec = Codec::new(params.key.as_ref(), role);
        Core {
            params,
            codec,
            epoch,
            rng,
            start: now,
            next_seq: 1,
            history: SendHistory::default(),
            counters: Counters::default(),
            timers: TimerTable::default(),
            control_seq: 0,
            out: VecDeque::new(),
            events: VecDeque::new(),
            pool: BufPool::default(),
            scratch: Vec::with_capacity(2048),
            last_cap_warn: RateLimit::default(),
            last_auth_warn: RateLimit::default(),
            last_version_warn: RateLimit::default(),
        }
    }

    /// The sequence for the next DATA or CLOSE this endpoint sends at `now`.
    pub(crate) fn next_seq(&mut self, now: Instant) -> u64 {
        let seq = self.next_seq;
        self.history.on_send(now, seq);
        self.next_seq += 1;
        seq
    }

    /// The answer to a challenge that says its sender may have accepted our packets from up
    /// to `age_us` ago: the first sequence we sent since then (what we sent before may have
    /// been delivered already). The challenge took about half a round trip to come, and our
    /// packets about as long to reach the challenger, so `rtt` is taken off too: the caller
    /// passes the round-trip time it measured, or zero when it measures none (the floor then
    /// sits up to one round trip late: it refuses a few fresh packets, never admits an old
    /// one).
    pub(crate) fn fresh_from(&self, now: Instant, age_us: u64, rtt: Duration) -> u64 {
        let back = Duration::from_micros(age_us) + rtt;
        let since = now.checked_sub(back).unwrap_or(self.start);
        self.history.first_sent_since(since, self.next_seq)
    }

    /// Microseconds since this endpoint started (what its challenges carry).
    pub(crate) fn uptime_us(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_micros() as u64
    }

    // ---- input ---------------------------------------------------------------------------

    /// A datagram from the network: counts it and parses its header (checking that its mode,
    /// sealed or not, is ours), without verifying the trailer. Bad ones are counted (and an
    /// authentication mismatch warned about, naming `origin`).
    pub(crate) fn parse(
        &mut self,
        now: Instant,
        bytes: &[u8],
        origin: &dyn fmt::Display,
    ) -> Option<Header> {
        self.counters.net_rx_packets += 1;
        self.counters.net_rx_bytes += bytes.len() as u64;
        let h = match self.codec.parse(bytes) {
            Ok(h) => h,
            Err(DecodeError::UnsupportedVersion(1)) => {
                self.counters.old_version += 1;
                if self.last_version_warn.ready(now, WARN_EVERY) {
                    warn!(
                        "packets {origin}: the peer speaks protocol v1 (an older mptunnel); \
                         both ends need this version ({} so far; next report in 10 s)",
                        self.counters.old_version
                    );
                }
                return None;
            }
            Err(e) => {
                self.count_decode_error(now, origin, e);
                return None;
            }
        };
        // Our own packets sent back to us (a reflecting bridge): never taken for a peer's.
        if h.sender() == self.codec.role() || h.epoch == self.epoch {
            self.counters.reflected += 1;
            return None;
        }
        Some(h)
    }

    /// With a key, checks the copy's path MAC (before the window: a copy whose path index
    /// was changed never marks it); failures are counted.
    pub(crate) fn verify_path(
        &mut self,
        now: Instant,
        bytes: &[u8],
        origin: &dyn fmt::Display,
    ) -> bool {
        match self.codec.verify_path(bytes) {
            Ok(()) => true,
            Err(e) => {
                // With another key (or none), every copy fails here first.
                self.counters.path_auth_failures += 1;
                self.count_decode_error(now, origin, e);
                false
            }
        }
    }

    /// The buffer sealed payloads are decrypted into; give it back with [`put_scratch`].
    pub(crate) fn take_scratch(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.scratch)
    }

    /// Returns the buffer of [`take_scratch`].
    pub(crate) fn put_scratch(&mut self, s: Vec<u8>) {
        self.scratch = s;
    }

    /// Verifies (and decrypts into `scratch`) a packet [`parse`](Self::parse) accepted;
    /// failures are counted.
    pub(crate) fn open<'a>(
        &mut self,
        now: Instant,
        bytes: &'a [u8],
        scratch: &'a mut Vec<u8>,
        origin: &dyn fmt::Display,
    ) -> Option<&'a [u8]> {
        match self.codec.open(bytes, scratch) {
            Ok(p) => Some(p),
            Err(e) => {
                self.count_decode_error(now, origin, e);
                None
            }
        }
    }

    fn count_decode_error(&mut self, now: Instant, origin: &dyn fmt::Display, e: DecodeError) {
        match e {
            DecodeError::Checksum => self.counters.checksum_errors += 1,
            DecodeError::Auth | DecodeError::SealMismatch => {
                self.counters.auth_failures += 1;
                if self.last_auth_warn.ready(now, WARN_EVERY) {
                    let why = match (e, self.codec.sealed()) {
                        (DecodeError::Auth, _) => "the peer uses another key",
                        (_, true) => "the peer sends plaintext: it has no key",
                        (_, false) => "the peer encrypts: this side has no key",
                    };
                    warn!(
                        "packets {origin} fail authentication: {why} ({} so far; next report in 10 s)",
                        self.counters.auth_failures
                    );
                }
            }
            _ => self.counters.malformed += 1,
        }
    }

    /// A datagram from the local side (apps, the target): counted; false (and counted as
    /// oversized) when it is too large to carry unsplit.
    pub(crate) fn accept_local(&mut self, len: usize) -> bool {
        self.counters.local_rx_datagrams += 1;
        self.counters.local_rx_bytes += len as u64;
        if len > self.codec.max_payload() {
            self.counters.oversized += 1;
            return false;
        }
        true
    }

    /// Counts a packet of a session that admission refused.
    pub(crate) fn count_refusal(&mut self, r: Refusal) {
        match r {
            Refusal::Window(r) => self.counters.count_reject(r),
            Refusal::HeldDuplicate => self.counters.duplicates += 1,
            Refusal::StaleEpoch => self.counters.stale_epoch += 1,
        }
    }

    /// A new session would exceed the cap: counted, and warned about (rate-limited) with
    /// `what` saying what is refused.
    pub(crate) fn refuse_over_cap(&mut self, now: Instant, what: &dyn fmt::Display) {
        self.counters.session_cap_drops += 1;
        if self.last_cap_warn.ready(now, WARN_EVERY) {
            warn!("session cap ({}) reached: {what}", self.params.max_sessions);
        }
    }

    /// A PROBE on the control session, parsed; anything else is counted as malformed.
    pub(crate) fn parse_probe(&mut self, header: &Header, payload: &[u8]) -> Option<Probe> {
        match Probe::parse(payload) {
            Ok(p) if header.session == CONTROL_SESSION => Some(p),
            _ => {
                self.counters.malformed += 1;
                None
            }
        }
    }

    /// The PROBE_ACK answering `probe` (from `header`), saying how many of the peer's
    /// probes and DATA copies arrived on that path.
    pub(crate) fn probe_ack(
        &mut self,
        header: &Header,
        probe: Probe,
        (probes, data, data_sent): crate::protocol::path::AckCounts,
    ) -> (Header, [u8; PROBE_ACK_LEN]) {
        let ack = ProbeAck {
            echo_seq: header.seq,
            echo_token: probe.token,
            probes_received: probes,
            data_received: data,
            data_sent,
        };
        (self.control_header(PacketType::ProbeAck), ack.to_bytes())
    }

    /// A CHALLENGE about this endpoint as it is now (control session, our epoch); an
    /// unparsable one is counted as malformed, one for an old instance ignored.
    pub(crate) fn parse_challenge(&mut self, header: &Header, payload: &[u8]) -> Option<Challenge> {
        let Ok(ch) = Challenge::parse(payload) else {
            self.counters.malformed += 1;
            return None;
        };
        (header.session == CONTROL_SESSION && ch.epoch == self.epoch).then_some(ch)
    }

    /// A CHALLENGE packet (counted as sent): its header and payload.
    pub(crate) fn challenge_packet(&mut self, ch: &Challenge) -> (Header, [u8; CHALLENGE_LEN]) {
        self.counters.challenges_sent += 1;
        (self.control_header(PacketType::Challenge), ch.to_bytes())
    }

    /// The RESPONSE to `ch`: its header and payload.
    pub(crate) fn response_packet(
        &mut self,
        ch: Challenge,
        fresh_from: u64,
    ) -> (Header, [u8; RESPONSE_LEN]) {
        let r = Response {
            challenge: ch,
            fresh_from,
        };
        (self.control_header(PacketType::Response), r.to_bytes())
    }

    // ---- output --------------------------------------------------------------------------

    /// The header of this endpoint's next control packet (its own sequence, session 0).
    pub(crate) fn control_header(&mut self, ptype: PacketType) -> Header {
        self.control_seq += 1;
        self.header(ptype, CONTROL_SESSION, self.control_seq)
    }

    /// A header of ours (its sender flag and path index are set per copy).
    pub(crate) fn header(&self, ptype: PacketType, session: u64, seq: u64) -> Header {
        Header {
            ptype,
            flags: 0,
            path: 0,
            session,
            epoch: self.epoch,
            seq,
        }
    }

    /// Encodes (and seals) a packet once, into a pooled buffer that each copy is made from
    /// with [`copy`](Self::copy); give it back with [`discard`](Self::discard).
    pub(crate) fn prepare(&mut self, header: &Header, payload: &[u8]) -> Vec<u8> {
        let mut buf = self.pool.get();
        self.codec.prepare(&mut buf, header, payload);
        buf
    }

    /// The copy of a prepared packet for the client's path `path`.
    pub(crate) fn copy(&mut self, template: &[u8], path: u8) -> Vec<u8> {
        let mut buf = self.pool.get();
        self.codec.finish_copy(template, path, &mut buf);
        buf
    }

    /// Queues one copy (counted as sent).
    pub(crate) fn queue(&mut self, dest: D, buf: Vec<u8>) {
        self.counters.net_tx_packets += 1;
        self.counters.net_tx_bytes += buf.len() as u64;
        self.out.push_back(Transmit { dest, data: buf });
    }

    /// Gives back a buffer that will not be sent.
    pub(crate) fn discard(&mut self, buf: Vec<u8>) {
        self.pool.put(buf);
    }

    /// Queues a payload for the local side (an app, the target).
    pub(crate) fn deliver(&mut self, dest: D, payload: &[u8]) {
        let mut buf = self.pool.get();
        buf.extend_from_slice(payload);
        self.counters.local_tx_datagrams += 1;
        self.counters.local_tx_bytes += payload.len() as u64;
        self.out.push_back(Transmit { dest, data: buf });
    }

    /// Next packet or delivery for the driver.
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit<D>> {
        self.out.pop_front()
    }

    /// Gives a transmit's buffer back for reuse.
    pub(crate) fn recycle(&mut self, buf: Vec<u8>) {
        self.pool.put(buf);
    }

    /// Something for the driver to know; counted where it has a counter.
    pub(crate) fn push_event(&mut self, e: Event) {
        match &e {
            Event::Path(_) => self.counters.path_changes += 1,
            Event::SessionOpened { .. } => self.counters.sessions_opened += 1,
            Event::PeerRestarted { .. } => self.counters.peer_restarts += 1,
            Event::SessionClosed { .. } => {}
        }
        self.events.push_back(e);
    }

    /// Next event for the driver.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// A snapshot with the figures both roles have.
    pub(crate) fn stats(
        &self,
        now: Instant,
        role: &str,
        mode: &str,
        sessions: usize,
        paths: Vec<PathStats>,
    ) -> Stats {
        Stats {
            role: role.into(),
            epoch: format!("{:016x}", self.epoch),
            uptime_s: now.saturating_duration_since(self.start).as_secs_f64(),
            mode: mode.into(),
            encrypted: self.codec.sealed(),
            sessions,
            totals: self.counters.clone(),
            paths,
            clients: Vec::new(),
        }
    }
}

/// What a driver takes from an endpoint of either role: packets with their destinations,
/// events, and buffers to give back.
pub trait Endpoint {
    /// Where this role's packets go ([`ClientDest`](super::transmit::ClientDest) or
    /// [`ServerDest`](super::transmit::ServerDest)).
    type Dest;

    #[doc(hidden)]
    fn core(&self) -> &Core<Self::Dest>;

    #[doc(hidden)]
    fn core_mut(&mut self) -> &mut Core<Self::Dest>;

    /// When `handle_timeout` should next run (`None`: nothing is due until input comes).
    fn poll_timeout(&self) -> Option<Instant>;

    /// Runs the timers that are due.
    fn handle_timeout(&mut self, now: Instant);

    /// A stats snapshot.
    fn stats(&self, now: Instant) -> Stats;

    /// Clean shutdown: CLOSE to the peer for every session.
    fn close(&mut self, now: Instant);

    /// Next packet or delivery for the driver.
    fn poll_transmit(&mut self) -> Option<Transmit<Self::Dest>> {
        self.core_mut().poll_transmit()
    }

    /// Next event (path changes, sessions opened and closed, peer restarts). A server's
    /// driver opens a session's target socket on `SessionOpened`, before it takes the next
    /// transmit.
    fn poll_event(&mut self) -> Option<Event> {
        self.core_mut().poll_event()
    }

    /// Gives a transmit's buffer back for reuse.
    fn recycle(&mut self, buf: Vec<u8>) {
        self.core_mut().recycle(buf);
    }

    /// The driver could not send `n` packets.
    fn count_send_errors(&mut self, n: u64) {
        self.core_mut().counters.send_errors += n;
    }

    /// Counters so far.
    fn counters(&self) -> &Counters {
        &self.core().counters
    }

    /// This endpoint's epoch.
    fn epoch(&self) -> u64 {
        self.core().epoch
    }
}

/// Implements [`Endpoint`] for a role's type (`$t`, whose `core` field is a `Core<$d>`).
macro_rules! endpoint_of {
    ($t:ty, $d:ty) => {
        impl $crate::protocol::endpoint::Endpoint for $t {
            type Dest = $d;

            fn core(&self) -> &$crate::protocol::endpoint::Core<$d> {
                &self.core
            }

            fn core_mut(&mut self) -> &mut $crate::protocol::endpoint::Core<$d> {
                &mut self.core
            }

            fn poll_timeout(&self) -> Option<std::time::Instant> {
                <$t>::poll_timeout(self)
            }

            fn handle_timeout(&mut self, now: std::time::Instant) {
                <$t>::handle_timeout(self, now)
            }

            fn stats(&self, now: std::time::Instant) -> $crate::protocol::stats::Stats {
                <$t>::stats(self, now)
            }

            fn close(&mut self, now: std::time::Instant) {
                <$t>::close(self, now)
            }
        }
    };
}
pub(crate) use endpoint_of;
