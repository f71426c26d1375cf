//! Counters and the stats snapshot both endpoint kinds report (the CLI, C and Python show
//! this same structure, as JSON).

use serde::Serialize;

use super::path::PathStats;

/// Monotonic counters of an endpoint. Every drop has a counter of its own.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Counters {
    /// Datagrams taken from the local side (apps on a client, the target on a server).
    pub local_rx_datagrams: u64,
    /// Bytes of those datagrams.
    pub local_rx_bytes: u64,
    /// Datagrams delivered to the local side.
    pub local_tx_datagrams: u64,
    /// Bytes of those datagrams.
    pub local_tx_bytes: u64,
    /// Packets sent to the network (each copy counts).
    pub net_tx_packets: u64,
    /// Bytes sent to the network.
    pub net_tx_bytes: u64,
    /// Packets received from the network (valid or not).
    pub net_rx_packets: u64,
    /// Bytes received from the network.
    pub net_rx_bytes: u64,
    /// Copies dropped because an earlier copy was already delivered (or a replay).
    pub duplicates: u64,
    /// Packets too far behind the window to tell, dropped.
    pub too_old: u64,
    /// Packets from an epoch the peer left behind, dropped.
    pub stale_epoch: u64,
    /// Datagrams that are not valid packets (bad magic, version, type, length), dropped.
    pub malformed: u64,
    /// Packets whose checksum failed (corrupted on the way), dropped.
    pub checksum_errors: u64,
    /// DATA for a session this endpoint does not have, dropped.
    pub unknown_session: u64,
    /// Datagrams too big to carry unsplit, dropped.
    pub oversized: u64,
    /// New sessions refused because the session cap was reached.
    pub session_cap_drops: u64,
    /// Replies not sent to an unvalidated address (anti-amplification).
    pub amplification_drops: u64,
    /// Sends the OS refused (buffer full, unreachable), dropped.
    pub send_errors: u64,
    /// Times a peer came back with a new epoch (restart).
    pub peer_restarts: u64,
    /// Times a path changed state (up, lossy, down); each is logged as an event.
    pub path_changes: u64,
    /// Sessions created.
    pub sessions_opened: u64,
    /// Sessions removed by CLOSE or shutdown.
    pub sessions_closed: u64,
    /// Sessions removed for being idle.
    pub sessions_expired: u64,
    /// CLOSE packets accepted from the peer.
    pub close_received: u64,
    /// Packets that failed authentication (forged, corrupted, wrong key) or whose sealed/
    /// unsealed mode does not match ours (key on one side only), dropped.
    pub auth_failures: u64,
    /// Sealed copies whose path MAC failed (a path index changed on the way, or another
    /// key), dropped before they could mark the replay window (counted in `auth_failures`
    /// too).
    pub path_auth_failures: u64,
    /// Packets of our own role or epoch (our own packets sent back to us), dropped.
    pub reflected: u64,
    /// Packets of protocol v1 (an older peer), dropped.
    pub old_version: u64,
    /// Packets of types reserved for later versions (targets, FEC, announcements), dropped.
    pub unsupported: u64,
    /// Challenges sent to confirm a peer epoch (with a key, any new one; without, a new
    /// server epoch, on the client).
    pub challenges_sent: u64,
    /// Peer epochs confirmed by a response.
    pub challenges_answered: u64,
    /// Challenges not sent because that address had one very recently.
    pub challenges_limited: u64,
    /// Packets held for a challenge that was never answered (or over the hold limits),
    /// dropped.
    pub held_dropped: u64,
    /// Datagrams for an in-process application (socket or listener) dropped because it did
    /// not read them in time (they count in `local_tx_datagrams` too).
    pub app_queue_drops: u64,
}

impl Counters {
    /// Counts a packet the replay window or the epoch tracking refused.
    pub(crate) fn count_reject(&mut self, r: super::peer::PeerReject) {
        use super::peer::PeerReject;
        use super::window::Reject;
        match r {
            PeerReject::Window(Reject::Duplicate) => self.duplicates += 1,
            PeerReject::Window(Reject::TooOld) => self.too_old += 1,
            PeerReject::RetiredEpoch => self.stale_epoch += 1,
        }
    }
}

/// A snapshot of an endpoint.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Stats {
    /// `client` or `server`.
    pub role: String,
    /// This endpoint's epoch, hex.
    pub epoch: String,
    /// Seconds since the endpoint started.
    pub uptime_s: f64,
    /// Scheduling mode (client) or `-` (server).
    pub mode: String,
    /// True when packets are sealed with a key.
    pub encrypted: bool,
    /// Sessions currently held.
    pub sessions: usize,
    /// Totals.
    pub totals: Counters,
    /// Per-path figures (a server: the bridge addresses heard from lately).
    pub paths: Vec<PathStats>,
    /// A server: one entry per client epoch it holds (empty on a client).
    pub clients: Vec<ClientStats>,
}

/// One client epoch as a server sees it.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ClientStats {
    /// The client's epoch, hex.
    pub epoch: String,
    /// The client's scheduling mode, as it announced it.
    pub mode: String,
    /// Sessions of this client held.
    pub sessions: usize,
    /// Milliseconds since a packet of it was accepted.
    pub last_rx_ms: u64,
    /// Its paths, by the client's path index.
    pub paths: Vec<ClientPathStats>,
}

/// One path of a client as a server sees it; RTT, jitter and loss are the client's own
/// figures, carried in its probes.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ClientPathStats {
    /// The client's index for the path.
    pub index: usize,
    /// The bridge address replies go to.
    pub remote: String,
    /// The address before, kept until the new one is validated.
    pub fallback: Option<String>,
    /// `up`, `lossy` or `down`.
    pub state: String,
    /// Smoothed RTT in ms (the client's figure).
    pub rtt_ms: Option<f64>,
    /// RTT variation in ms (the client's figure).
    pub jitter_ms: Option<f64>,
    /// Loss client → server (the client's figure).
    pub loss_out: Option<f64>,
    /// Loss server → client (the client's figure).
    pub loss_in: Option<f64>,
    /// A backup path.
    pub backup: bool,
    /// Replies go on it now (the client's mode and choice).
    pub active: bool,
    /// Milliseconds since anything arrived from its address.
    pub last_rx_ms: Option<u64>,
}

impl Stats {
    /// The snapshot as a JSON string.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string())
    }

    /// A short multi-line human summary, for logs and the CLI.
    pub fn to_text(&self) -> String {
        let t = &self.totals;
        let mut s = format!(
            "{} epoch {} up {:.0}s, {} sessions; local in {} / out {} datagrams; net tx {} rx {} packets; \
             dropped: {} dup, {} old, {} malformed, {} checksum, {} auth, {} unknown-session, {} oversized, {} send-errors",
            self.role,
            self.epoch,
            self.uptime_s,
            self.sessions,
            t.local_rx_datagrams,
            t.local_tx_datagrams,
            t.net_tx_packets,
            t.net_rx_packets,
            t.duplicates,
            t.too_old,
            t.malformed,
            t.checksum_errors,
            t.auth_failures,
            t.unknown_session,
            t.oversized,
            t.send_errors,
        );
        for p in &self.paths {
            let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{:.1}%", x * 100.0));
            s.push_str(&format!(
                "\n  path {:<22} {:<6} rtt {:>8} loss out {:>6} in {:>6}  tx {} rx {}",
                p.name,
                p.state,
                p.rtt_ms.map_or("-".to_string(), |r| format!("{r:.2}ms")),
                f(p.loss_out),
                f(p.loss_in),
                p.tx_packets,
                p.rx_packets
            ));
        }
        s
    }
}
