//! The supervisor's vocabulary: agreement states and disconnect reasons, with the exact
//! names SPEC §4 gives them in status, logs and metrics.

use std::fmt;

use serde::Serialize;

/// Where an agreement's supervisor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Opening a connection and handshaking.
    Connecting,
    /// Receiving a refresh.
    Refreshing,
    /// Refresh done; receiving live changes.
    Persisting,
    /// Refresh-only: waiting for the next poll.
    Idle,
    /// Waiting before reconnecting after a failure.
    Backoff,
    /// Stopped by an operator; stays so until started.
    Stopped,
    /// Given up (revoked credentials, an error retrying cannot fix, `give_up_after`).
    Closed,
}

impl State {
    /// Every state, in the order an agreement usually meets them.
    pub const ALL: [State; 7] = [
        State::Connecting,
        State::Refreshing,
        State::Persisting,
        State::Idle,
        State::Backoff,
        State::Stopped,
        State::Closed,
    ];

    /// The status name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Refreshing => "refreshing",
            State::Persisting => "persisting",
            State::Idle => "idle",
            State::Backoff => "backoff",
            State::Stopped => "stopped",
            State::Closed => "closed",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a session ended (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The consumer process is shutting down.
    Shutdown,
    /// An operator stopped the agreement.
    AdminStop,
    /// The provider closed cleanly, with its own reason.
    ProviderGoodbye,
    /// Nothing arrived for `idle_timeout`.
    IdleTimeout,
    /// The keepalive poller heard nothing for `keepalive.timeout`.
    KeepaliveTimeout,
    /// EOF or reset without goodbye.
    ConnectionLost,
    /// An unexpected error in the replication path.
    Exception,
    /// The provider refused the handshake.
    Rejected,
}

impl Reason {
    /// Every reason, in SPEC §4's order.
    pub const ALL: [Reason; 8] = [
        Reason::Shutdown,
        Reason::AdminStop,
        Reason::ProviderGoodbye,
        Reason::IdleTimeout,
        Reason::KeepaliveTimeout,
        Reason::ConnectionLost,
        Reason::Exception,
        Reason::Rejected,
    ];

    /// The status/log name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Shutdown => "shutdown",
            Reason::AdminStop => "admin-stop",
            Reason::ProviderGoodbye => "provider-goodbye",
            Reason::IdleTimeout => "idle-timeout",
            Reason::KeepaliveTimeout => "keepalive-timeout",
            Reason::ConnectionLost => "connection-lost",
            Reason::Exception => "exception",
            Reason::Rejected => "rejected",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each disconnection reason has SPEC §4's name, and the same one in the log line,
    /// `last_error` and the status table (`as_str`) as in `last_disconnect` (serde):
    /// spelled twice, a swap in one showed `keepalive-timeout` in one place and
    /// `idle-timeout` in the other for the same disconnection.
    #[test]
    fn each_reason_has_the_spec_s_name_wherever_it_is_shown() {
        let named = [
            (Reason::Shutdown, "shutdown"),
            (Reason::AdminStop, "admin-stop"),
            (Reason::ProviderGoodbye, "provider-goodbye"),
            (Reason::IdleTimeout, "idle-timeout"),
            (Reason::KeepaliveTimeout, "keepalive-timeout"),
            (Reason::ConnectionLost, "connection-lost"),
            (Reason::Exception, "exception"),
            (Reason::Rejected, "rejected"),
        ];
        for (reason, name) in named {
            assert_eq!(reason.as_str(), name, "{reason:?} in logs and last_error");
            assert_eq!(reason.to_string(), name, "{reason:?} displayed");
            assert_eq!(serde_json::to_value(reason).unwrap(), name, "{reason:?} as last_disconnect");
        }
        // The metrics list a counter for each, from the first scrape.
        assert_eq!(Reason::ALL, named.map(|(reason, _)| reason));
    }

    /// The metrics write a series for each state in `State::ALL` from the first scrape
    /// (an alert on `state="connecting"` reads it): a state left out of it has no series
    /// until a restart after the fix.
    #[test]
    fn every_state_is_in_the_list_the_metrics_write() {
        let named = [
            (State::Connecting, "connecting"),
            (State::Refreshing, "refreshing"),
            (State::Persisting, "persisting"),
            (State::Idle, "idle"),
            (State::Backoff, "backoff"),
            (State::Stopped, "stopped"),
            (State::Closed, "closed"),
        ];
        for (state, name) in named {
            // A state added without a place here does not compile.
            match state {
                State::Connecting
                | State::Refreshing
                | State::Persisting
                | State::Idle
                | State::Backoff
                | State::Stopped
                | State::Closed => assert_eq!(state.as_str(), name),
            }
        }
        assert_eq!(State::ALL.to_vec(), named.map(|(state, _)| state).to_vec());
    }
}
