//! `tether-provider status`: what the provider reports about itself and its consumers
//! (SPEC §5 field names), as JSON or as a table for people.

use std::time::SystemTime;

use serde::Serialize;
use tether_protocol::Csn;
use tether_store::Directory;

use crate::registry::{Registry, SessionInfo};

/// The changelog's extent.
#[derive(Debug, Clone, Serialize)]
pub struct ChangelogStatus {
    /// Oldest retained CSN.
    pub oldest: Option<u64>,
    /// Newest CSN.
    pub newest: Option<u64>,
    /// A cookie at or above this CSN gets a delta (every change after it is in the
    /// changelog); one below it, a present refresh. Trimming raises it, and so does an
    /// offline load, which is not logged.
    pub floor: u64,
}

/// The whole status object.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderStatus {
    /// Whether the provider answered: `false` when `status` read a stopped provider's
    /// store itself (no sessions then), so a script can tell the two apart.
    pub running: bool,
    /// When the running provider started (RFC 3339; `null` when it is not running):
    /// its sessions, and the consumers' counters, begin there.
    pub started_at: Option<String>,
    /// The address the running provider listens on (`null` when it is not running): the
    /// one it bound, which the configuration's `listen` need not say (a name, port 0, a
    /// `listen` changed by a reload that waits for a restart), and which alone tells two
    /// providers on one port of two addresses apart.
    pub listen: Option<String>,
    /// The address the metrics endpoint (`metrics_listen`) listens on, as bound; `null`
    /// without one, and when the provider is not running.
    pub metrics_listen: Option<String>,
    /// When the TLS certificate the running provider serves expires (RFC 3339), for a
    /// monitor to alert on ahead of the day its consumers refuse it; absent without TLS,
    /// and when the provider is not running (it serves nothing then: the file is what its
    /// next start would serve, which `status`'s warnings judge).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_expires_at: Option<String>,
    /// The store's identity.
    pub store_id: String,
    /// The history the provider's cookies name now: a new one at each start (see
    /// [`tether_store::history`]). A consumer cookie naming another is from before the
    /// provider's last start, or from a history this store does not share.
    pub history: String,
    /// The newest durable CSN.
    pub csn: u64,
    /// Number of entries.
    pub entries: usize,
    /// Changelog extent.
    pub changelog: ChangelogStatus,
    /// Live sessions.
    pub sessions: Vec<SessionInfo>,
    /// A bulk load that began writing and did not finish (`null` otherwise): the store
    /// holds part of a file, and `serve` refuses it until a load finishes.
    pub unfinished_load: Option<UnfinishedLoadStatus>,
    /// Every consumer whose position the store keeps, connected or not: when a
    /// refresh-only consumer last polled, and whose position holds back the changelog's
    /// age-based trimming (a consumer seen within `hold_for_consumers`), which the live
    /// sessions alone cannot say. Oldest position first.
    pub consumers: Vec<KnownConsumer>,
}

/// A bulk load cut short, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct UnfinishedLoadStatus {
    /// The file it loaded, as the load named it.
    pub file: String,
    /// When it began writing (RFC 3339).
    pub began: String,
}

impl UnfinishedLoadStatus {
    pub fn of(load: &tether_store::UnfinishedLoad) -> Self {
        let began = std::time::UNIX_EPOCH + std::time::Duration::from_millis(load.began_ms);
        Self { file: load.file.clone(), began: crate::registry::rfc3339(began) }
    }

    /// What the store holds and the two ways on, for `serve`'s refusal and `status`:
    /// `config` is the provider's configuration file.
    pub fn advice(&self, config: &std::path::Path, entries: usize) -> String {
        let config = config.display();
        format!(
            "the store holds a load that did not finish (the load of {file} begun at {began} was cut short: killed, \
             stopped, or its store failed), {entries} entries in all: served, part of a file would be replicated as \
             the whole directory (a consumer that reloads would drop every entry not loaded yet). Finish it: \
             `tether-provider load -c {config} --skip-existing {file}`; or, to serve the store as it is, load \
             nothing: `tether-provider load -c {config} --skip-existing /dev/null`",
            file = self.file,
            began = self.began,
        )
    }
}

/// A consumer the provider remembers: the position it last acknowledged, kept in the
/// store until a trim passes it.
#[derive(Debug, Clone, Serialize)]
pub struct KnownConsumer {
    /// The agreement it replicates.
    pub agreement: String,
    /// The id it gives in its `Hello` (stable per consumer `data_dir`).
    pub client: String,
    /// The position recorded for it.
    pub csn: u64,
    /// Changes committed since that position.
    pub lag_changes: u64,
    /// Seconds since the oldest change past that position was committed (see
    /// [`lag_seconds`]): how stale that consumer's replica is, by this provider's clock.
    pub lag_seconds: Option<u64>,
    /// When the position was last recorded (RFC 3339): a session's start, and its
    /// acknowledgements at most once a second. A persist consumer that had nothing to
    /// acknowledge for a while shows the last time it did.
    pub last_seen: String,
    /// Whether a session of it is open now.
    pub connected: bool,
}

/// How stale a replica at `position` is when the provider's newest durable change is
/// `durable`: the seconds from the commit of the oldest change after `position` to `now`,
/// both read from this provider's clock, so unlike a consumer's own `lag_seconds` it
/// needs no agreement between two hosts' clocks and survives the consumer's restarts.
/// 0 for a replica that has every change; `None` when no retained record dates the
/// changes it lacks (an offline load's entries have none). When a trim has passed
/// `position`, the oldest record left dates it: the figure is then a lower bound.
pub fn lag_seconds(
    dir: &Directory,
    position: Csn,
    durable: Csn,
    now: SystemTime,
) -> Result<Option<u64>, tether_store::StoreError> {
    if position >= durable {
        return Ok(Some(0));
    }
    let Some(first) = dir.changelog().records(position, durable).next().transpose()? else {
        return Ok(None);
    };
    let now_ms = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    // A clock stepped back since the commit reads as current, not as a negative age.
    Ok(Some(now_ms.saturating_sub(first.time_ms) / 1000))
}

/// A lag in seconds for the tables: `-` where none is known.
fn seconds(lag: Option<u64>) -> String {
    lag.map_or_else(|| "-".to_owned(), |s| format!("{s}s"))
}

impl ProviderStatus {
    /// Collects the status of a provider: a running one's, listening on `listening`
    /// (`registry` holds its sessions), or, with `listening` none, what a stopped one's
    /// store holds.
    pub fn collect(
        dir: &Directory,
        registry: &Registry,
        listening: Option<std::net::SocketAddr>,
    ) -> Result<Self, tether_store::StoreError> {
        Self::collect_at(dir, registry, listening, SystemTime::now())
    }

    /// [`ProviderStatus::collect`] with the lags in seconds counted to `now`.
    pub fn collect_at(
        dir: &Directory,
        registry: &Registry,
        listening: Option<std::net::SocketAddr>,
        now: SystemTime,
    ) -> Result<Self, tether_store::StoreError> {
        let running = listening.is_some();
        let durable = dir.durable_csn();
        let mut sessions = registry.snapshot();
        // By agreement, then consumer: one consumer's sessions together, in the same
        // place from one `status` to the next.
        sessions.sort_by(|a, b| (&a.agreement, &a.client, a.session_id).cmp(&(&b.agreement, &b.client, b.session_id)));
        for s in &mut sessions {
            let position = match s.cookie.as_deref().and_then(|c| c.parse::<tether_protocol::Cookie>().ok()) {
                Some(acked) => acked.csn,
                // A consumer that has acknowledged nothing of this store (a full refresh
                // under way) holds none of its changes: shown as current, it read as
                // caught up while it held nothing.
                None if s.agreement != crate::server::WRITER => Csn::ZERO,
                None => continue,
            };
            s.lag_changes = durable.0.saturating_sub(position.0);
            s.lag_seconds = lag_seconds(dir, position, durable, now)?;
        }
        let mut consumers = Vec::new();
        for (key, position) in dir.consumer_positions()? {
            let (agreement, client) = crate::session::split_position_id(&key);
            let connected = sessions.iter().any(|s| s.agreement == agreement && s.client == client);
            consumers.push(KnownConsumer {
                agreement: agreement.to_owned(),
                client: client.to_owned(),
                csn: position.csn.0,
                lag_changes: durable.0.saturating_sub(position.csn.0),
                lag_seconds: lag_seconds(dir, position.csn, durable, now)?,
                last_seen: crate::registry::rfc3339(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(position.seen_ms),
                ),
                connected,
            });
        }
        consumers.sort_by(|a, b| (a.csn, &a.agreement, &a.client).cmp(&(b.csn, &b.agreement, &b.client)));
        Ok(Self {
            running,
            started_at: running.then(|| crate::registry::rfc3339(tether_config::shell::started_at())),
            listen: listening.map(|addr| addr.to_string()),
            metrics_listen: None,
            certificate_expires_at: None,
            store_id: dir.store_id().to_string(),
            history: dir.history().to_string(),
            csn: durable.0,
            entries: dir.entry_count()? as usize,
            changelog: ChangelogStatus {
                oldest: dir.changelog().oldest()?.map(|c| c.0),
                newest: dir.changelog().newest()?.map(|c| c.0),
                floor: dir.floor()?.0,
            },
            sessions,
            unfinished_load: dir.unfinished_load()?.as_ref().map(UnfinishedLoadStatus::of),
            consumers,
        })
    }

    /// A table for people.
    pub fn to_text(&self) -> String {
        let mut out = self.listen.as_ref().map(|addr| format!("listening on {addr}\n")).unwrap_or_default();
        if let Some(at) = &self.metrics_listen {
            out.push_str(&format!("metrics at http://{at}/metrics\n"));
        }
        if let Some(at) = &self.certificate_expires_at {
            out.push_str(&format!("TLS certificate served expires at {at}\n"));
        }
        out.push_str(&format!(
            "store {}  history {}  csn {}  entries {}  changelog {}  delta from {}\n",
            self.store_id,
            self.history,
            self.csn,
            self.entries,
            match (self.changelog.oldest, self.changelog.newest) {
                (Some(oldest), Some(newest)) => format!("{oldest}..{newest}"),
                // A store just loaded, or trimmed to nothing: "-..-" read as a fault.
                _ => "empty".to_owned(),
            },
            self.changelog.floor,
        ));
        if let Some(load) = &self.unfinished_load {
            out.push_str(&format!(
                "the load of {} begun at {} did not finish: `serve` refuses this store until a load finishes \
                 (`tether-provider load --skip-existing` of the same file)\n",
                load.file, load.began
            ));
        }
        if !self.running {
            // Read from the store of a stopped provider: no sessions to head a table of.
            out.push_str("(provider not running: no sessions)\n");
            return self.known_consumers(out);
        }
        // Columns as wide as their longest value (an IPv6 peer, a long agreement name),
        // so that each row stays in line with the header.
        let peer_w = self.sessions.iter().map(|s| s.peer.len()).max().unwrap_or(0).max(22);
        let agreement_w = self.sessions.iter().map(|s| s.agreement.len()).max().unwrap_or(0).max(16);
        // The consumer's id tells apart sessions of one agreement from several
        // processes, which the peer's port does not.
        let client_w = self.sessions.iter().map(|s| s.client.len()).max().unwrap_or(0).max(8);
        out.push_str(&format!(
            "{:<peer_w$} {:<agreement_w$} {:<client_w$} {:<20} {:>8} {:>8} {:>6} {:<8} {:<3} {}\n",
            "PEER", "AGREEMENT", "CONSUMER", "MODE", "LAG", "BEHIND", "QUEUE", "REFRESH", "TLS", "SINCE"
        ));
        for s in &self.sessions {
            out.push_str(&format!(
                "{:<peer_w$} {:<agreement_w$} {:<client_w$} {:<20} {:>8} {:>8} {:>6} {:<8} {:<3} {}\n",
                s.peer,
                s.agreement,
                s.client,
                s.mode,
                s.lag_changes,
                seconds(s.lag_seconds),
                s.queue_len,
                s.refresh.as_deref().unwrap_or("-"),
                if s.tls { "yes" } else { "no" },
                s.connected_since
            ));
        }
        self.known_consumers(out)
    }

    /// The table of consumers whose positions the store keeps, after `out`.
    fn known_consumers(&self, mut out: String) -> String {
        if !self.consumers.is_empty() {
            let agreement_w = self.consumers.iter().map(|c| c.agreement.len()).max().unwrap_or(0).max(16);
            let client_w = self.consumers.iter().map(|c| c.client.len()).max().unwrap_or(0).max(36);
            out.push_str(&format!(
                "\nknown consumers (positions kept for changelog trimming, oldest first)\n\
                 {:<agreement_w$} {:<client_w$} {:>10} {:>8} {:>8}  {}\n",
                "AGREEMENT", "CONSUMER", "CSN", "LAG", "BEHIND", "LAST SEEN"
            ));
            for c in &self.consumers {
                out.push_str(&format!(
                    "{:<agreement_w$} {:<client_w$} {:>10} {:>8} {:>8}  {}{}\n",
                    c.agreement,
                    c.client,
                    c.csn,
                    c.lag_changes,
                    seconds(c.lag_seconds),
                    c.last_seen,
                    if c.connected { " (connected)" } else { "" }
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(peer: &str, agreement: &str) -> SessionInfo {
        SessionInfo {
            connected_since: "2026-12-01T00:00:00Z".into(),
            protocol_version: 2,
            ..SessionInfo::for_test(1, peer, agreement, "c")
        }
    }

    #[test]
    fn the_table_stays_in_line_with_an_ipv6_peer_and_a_long_agreement_name() {
        let status = ProviderStatus {
            running: true,
            started_at: Some("2026-12-05T05:00:00Z".into()),
            listen: None,
            metrics_listen: None,
            certificate_expires_at: None,
            store_id: "s".into(),
            history: "h".into(),
            csn: 1,
            entries: 1,
            changelog: ChangelogStatus { oldest: None, newest: None, floor: 0 },
            sessions: vec![
                session("127.0.0.1:40000", "people"),
                session("[fd00:1234:5678:9abc::42]:40000", "people-of-the-eu-west-region"),
            ],
            unfinished_load: None,
            consumers: Vec::new(),
        };
        let text = status.to_text();
        let mode_at: Vec<usize> = text
            .lines()
            .skip(1)
            .map(|l| l.find("MODE").or_else(|| l.find("refresh-")).expect("a mode column"))
            .collect();
        assert!(mode_at.iter().all(|&at| at == mode_at[0]), "{mode_at:?}\n{text}");
    }

    /// The status of a stopped provider at CSN 3, with no changelog and no sessions.
    fn stopped() -> ProviderStatus {
        ProviderStatus {
            running: false,
            started_at: None,
            listen: None,
            metrics_listen: None,
            certificate_expires_at: None,
            store_id: "s".into(),
            history: "h".into(),
            csn: 3,
            entries: 3,
            changelog: ChangelogStatus { oldest: None, newest: None, floor: 3 },
            sessions: Vec::new(),
            unfinished_load: None,
            consumers: Vec::new(),
        }
    }

    /// The table names where the metrics are served, as the consumer's does, so an
    /// operator setting up a scraper reads the port a `:0` took; nothing without one.
    #[test]
    fn the_table_names_the_metrics_address_when_there_is_one() {
        let status = ProviderStatus {
            running: true,
            listen: Some("127.0.0.1:7389".into()),
            metrics_listen: Some("127.0.0.1:9390".into()),
            ..stopped()
        };
        let text = status.to_text();
        assert!(text.contains("\nmetrics at http://127.0.0.1:9390/metrics\n"), "{text}");
        assert!(!ProviderStatus { metrics_listen: None, ..status }.to_text().contains("metrics at"));
    }

    /// `status --json` has `metrics_listen` always, `null` without an endpoint or a
    /// running provider, as `listen`: a monitor tells "no endpoint" from a build that does
    /// not know the key.
    #[test]
    fn the_metrics_address_is_in_json_null_without_one() {
        let json = serde_json::to_value(stopped()).unwrap();
        assert_eq!(json.get("metrics_listen"), Some(&serde_json::Value::Null), "{json}");
        let status = ProviderStatus { running: true, metrics_listen: Some("[::1]:9390".into()), ..stopped() };
        assert_eq!(serde_json::to_value(&status).unwrap()["metrics_listen"], "[::1]:9390");
    }

    /// A stopped provider's status says so where the sessions would be, with no table
    /// header over nothing, and an empty changelog in a word, not as `-..-`.
    #[test]
    fn a_stopped_providers_table_says_it_has_no_sessions() {
        let status = stopped();
        let text = status.to_text();
        assert!(text.contains("changelog empty  delta from 3"), "{text}");
        assert!(text.contains("(provider not running: no sessions)") && !text.contains("PEER"), "{text}");
        assert!(!text.contains("listening"), "{text}");
        let status = ProviderStatus {
            running: true,
            started_at: Some("2026-12-05T05:00:00Z".into()),
            listen: Some("[::1]:7389".into()),
            changelog: ChangelogStatus { oldest: Some(4), newest: Some(9), floor: 3 },
            ..status
        };
        let text = status.to_text();
        assert!(text.contains("changelog 4..9  delta from 3") && text.contains("PEER"), "{text}");
        assert!(text.starts_with("listening on [::1]:7389\n"), "{text}");
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json.get("certificate_expires_at"), None, "without TLS: {json}");
        // With TLS, the certificate served: when it expires, for a monitor.
        let status = ProviderStatus { certificate_expires_at: Some("2027-01-01T00:00:00Z".into()), ..status };
        let text = status.to_text();
        assert!(
            text.starts_with("listening on [::1]:7389\nTLS certificate served expires at 2027-01-01T00:00:00Z\n"),
            "{text}"
        );
        assert_eq!(serde_json::to_value(&status).unwrap()["certificate_expires_at"], "2027-01-01T00:00:00Z");
    }

    /// A load that did not finish is said in the text with its file and when it began
    /// (kept in milliseconds, shown in seconds), whether or not the provider runs.
    #[test]
    fn a_load_that_did_not_finish_is_said_with_its_file_and_when_it_began() {
        let began_ms = 1_764_892_800_123;
        let load = UnfinishedLoadStatus::of(&tether_store::UnfinishedLoad { file: "people.ldif".into(), began_ms });
        assert_eq!(load.began, "2025-12-05T00:00:00Z");
        let status = ProviderStatus { unfinished_load: Some(load), ..stopped() };
        let said = "the load of people.ldif begun at 2025-12-05T00:00:00Z did not finish: `serve` refuses this store";
        assert!(status.to_text().contains(said), "{}", status.to_text());
        let status = ProviderStatus { running: true, started_at: Some("2025-12-05T00:00:01Z".into()), ..status };
        assert!(status.to_text().contains(said), "{}", status.to_text());
    }

    /// The store's consumer positions are listed whether or not their consumer is
    /// connected, oldest first, with their lag and whether a session of theirs is open.
    #[test]
    fn known_consumers_are_listed_oldest_first_with_who_is_connected() {
        use tether_protocol::{Attributes, Change, Csn, Dn, Value};
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        let mut attrs = Attributes::default();
        attrs.add("objectClass", [Value::from("domain")]).unwrap();
        dir.write(&Change::Add { dn: Dn::parse("dc=example,dc=com").unwrap(), attrs }).unwrap();
        let written = dir.durable_csn().0;
        assert!(written > 0);
        use crate::session::position_id;
        dir.record_consumer(&position_id("people", "9f0c2a4e-0000-4000-8000-000000000001"), Csn(written)).unwrap();
        // A client id is the consumer's to choose, '/' included.
        dir.record_consumer(&position_id("groups", "host/9f0c2a4e-0000-4000-8000-000000000002"), Csn(0)).unwrap();
        let registry = Registry::default();
        let mut live = session("127.0.0.1:40000", "people");
        live.client = "9f0c2a4e-0000-4000-8000-000000000001".into();
        let _registration = registry.register(live, &tokio_util::sync::CancellationToken::new());

        let status = ProviderStatus::collect(&dir, &registry, Some("[::1]:7389".parse().unwrap())).unwrap();
        let listed: Vec<(&str, u64, u64, bool)> =
            status.consumers.iter().map(|c| (c.agreement.as_str(), c.csn, c.lag_changes, c.connected)).collect();
        assert_eq!(listed, [("groups", 0, written, false), ("people", written, 0, true)]);
        let text = status.to_text();
        assert!(text.contains("known consumers"), "{text}");
        let people = text.lines().find(|l| l.starts_with("people ") && l.contains("9f0c2a4e")).unwrap();
        assert!(people.ends_with("(connected)"), "{text}");
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["consumers"][0]["client"], "host/9f0c2a4e-0000-4000-8000-000000000002", "{json}");
        assert_eq!(json["listen"], "[::1]:7389", "{json}");
    }

    /// A consumer receiving a full refresh has acknowledged nothing of this store: its lag
    /// is every change, not none.
    #[test]
    fn a_session_that_acknowledged_nothing_yet_lags_by_every_change() {
        use tether_protocol::{Attributes, Change, Dn, Value};
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        let mut attrs = Attributes::default();
        attrs.add("objectClass", [Value::from("domain")]).unwrap();
        dir.write(&Change::Add { dn: Dn::parse("dc=example,dc=com").unwrap(), attrs }).unwrap();
        let registry = Registry::default();
        let token = tokio_util::sync::CancellationToken::new();
        let _refreshing = registry.register(session("127.0.0.1:40000", "people"), &token);
        let writer = SessionInfo { session_id: 2, ..session("127.0.0.1:40001", crate::server::WRITER) };
        let _writer = registry.register(writer, &token);
        let status = ProviderStatus::collect(&dir, &registry, Some("[::1]:7389".parse().unwrap())).unwrap();
        let lags: Vec<(&str, u64)> = status.sessions.iter().map(|s| (s.agreement.as_str(), s.lag_changes)).collect();
        assert_eq!(lags, [("people", dir.durable_csn().0), (crate::server::WRITER, 0)]);
        assert!(dir.durable_csn().0 > 0);
    }

    /// Sessions of one agreement from several consumer processes are told apart by the
    /// consumer's id, and listed by agreement and consumer, not in the order they came.
    #[test]
    fn sessions_are_listed_by_agreement_and_consumer_with_its_id() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(tmp.path(), &tether_protocol::Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        let registry = Registry::default();
        let cancel = tokio_util::sync::CancellationToken::new();
        let mut registrations = Vec::new();
        for (id, agreement, client) in [(1, "people", "host-b"), (2, "groups", "host-a"), (3, "people", "host-a")] {
            let mut s = session(&format!("127.0.0.1:4000{id}"), agreement);
            (s.session_id, s.client) = (id, client.into());
            registrations.push(registry.register(s, &cancel));
        }
        let status = ProviderStatus::collect(&dir, &registry, Some("[::1]:7389".parse().unwrap())).unwrap();
        let order: Vec<(&str, &str)> =
            status.sessions.iter().map(|s| (s.agreement.as_str(), s.client.as_str())).collect();
        assert_eq!(order, [("groups", "host-a"), ("people", "host-a"), ("people", "host-b")]);
        let text = status.to_text();
        // Below the address and the store's line.
        let rows: Vec<&str> = text.lines().skip(2).take(4).collect();
        assert!(rows[0].contains("CONSUMER"), "{text}");
        assert!(rows[2].contains("127.0.0.1:40003") && rows[2].contains(" host-a "), "{text}");
        assert!(rows[3].contains("127.0.0.1:40001") && rows[3].contains(" host-b "), "{text}");
    }

    /// A store holding the suffix entry and `ou=people` under it: two changes, CSNs 1 and 2.
    fn two_changes() -> (tempfile::TempDir, Directory) {
        use tether_protocol::{Attributes, Change, Dn, Value};
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        for (dn, class) in [("dc=example,dc=com", "domain"), ("ou=people,dc=example,dc=com", "organizationalUnit")] {
            let mut attrs = Attributes::default();
            attrs.add("objectClass", [Value::from(class)]).unwrap();
            dir.write(&Change::Add { dn: Dn::parse(dn).unwrap(), attrs }).unwrap();
        }
        (tmp, dir)
    }

    /// `changelog {oldest, newest}` is the changelog's extent, oldest first, in the JSON
    /// and the table alike: a script sizing how far back a consumer may be and still get
    /// a delta reads `oldest`.
    #[test]
    fn the_changelog_s_extent_is_its_oldest_and_its_newest_change() {
        let (_tmp, dir) = two_changes();
        let status = ProviderStatus::collect(&dir, &Registry::default(), None).unwrap();
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!((&json["changelog"]["oldest"], &json["changelog"]["newest"]), (&1.into(), &2.into()), "{json}");
        assert_eq!((&json["csn"], &json["entries"]), (&2.into(), &2.into()), "{json}");
        let text = status.to_text();
        assert!(text.contains(" changelog 1..2 "), "{text}");
    }

    /// A consumer the store remembers is `connected` only while a session of that very
    /// consumer is open, not one of another consumer of its agreement: two hosts
    /// replicating one agreement, one of them down, read as both up.
    #[test]
    fn a_known_consumer_is_connected_only_while_a_session_of_its_own_is_open() {
        use crate::session::position_id;
        use tether_protocol::Csn;
        let (_tmp, dir) = two_changes();
        dir.record_consumer(&position_id("people", "host-a"), Csn(2)).unwrap();
        dir.record_consumer(&position_id("people", "host-b"), Csn(1)).unwrap();
        let registry = Registry::default();
        let mut live = session("127.0.0.1:40000", "people");
        live.client = "host-a".into();
        let _registration = registry.register(live, &tokio_util::sync::CancellationToken::new());
        let status = ProviderStatus::collect(&dir, &registry, Some("[::1]:7389".parse().unwrap())).unwrap();
        let listed: Vec<(&str, bool)> = status.consumers.iter().map(|c| (c.client.as_str(), c.connected)).collect();
        assert_eq!(listed, [("host-b", false), ("host-a", true)]);
        let text = status.to_text();
        let down = text.lines().find(|l| l.starts_with("people ") && l.contains(" host-b ")).unwrap();
        assert!(!down.ends_with("(connected)"), "{text}");
    }

    /// Each session's row shows its own lag under LAG and its own queue under QUEUE.
    #[test]
    fn a_session_s_row_shows_its_lag_and_queue_under_their_headers() {
        let status = ProviderStatus {
            sessions: vec![SessionInfo { lag_changes: 7, queue_len: 3, ..session("127.0.0.1:40000", "people") }],
            running: true,
            started_at: Some("2026-12-05T05:00:00Z".into()),
            ..stopped()
        };
        let text = status.to_text();
        let header = text.lines().find(|l| l.starts_with("PEER")).expect("a header");
        let row = text.lines().find(|l| l.starts_with("127.0.0.1:40000")).expect("a row");
        // Right-aligned columns: each value ends where its header does.
        let under = |name: &str| {
            let end = header.find(name).unwrap() + name.len();
            row[..end].split_whitespace().last().unwrap().to_owned()
        };
        assert_eq!((under("LAG"), under("QUEUE")), ("7".to_owned(), "3".to_owned()), "\n{text}");
    }

    /// A session whose lag in seconds is not known (its missing changes an offline
    /// load's, which the changelog does not date) shows `-` under BEHIND, never `0s`,
    /// which would read as current to an operator looking for the consumer behind.
    #[test]
    fn a_session_whose_lag_in_seconds_is_unknown_shows_a_dash_under_behind() {
        let behind = SessionInfo { lag_changes: 40, lag_seconds: None, ..session("127.0.0.1:40000", "people") };
        let current = SessionInfo { lag_seconds: Some(0), ..session("127.0.0.1:40001", "groups") };
        let status = ProviderStatus {
            sessions: vec![behind, current],
            running: true,
            started_at: Some("2026-12-05T05:00:00Z".into()),
            ..stopped()
        };
        let text = status.to_text();
        let header = text.lines().find(|l| l.starts_with("PEER")).expect("a header");
        let end = header.find("BEHIND").unwrap() + "BEHIND".len();
        let under = |peer: &str| {
            let row = text.lines().find(|l| l.starts_with(peer)).expect("a row");
            row[..end].split_whitespace().last().unwrap().to_owned()
        };
        assert_eq!((under("127.0.0.1:40000"), under("127.0.0.1:40001")), ("-".to_owned(), "0s".to_owned()), "\n{text}");
    }

    /// `status --json` names a session's fields as SPEC section 5 and docs/operations.md
    /// do: a monitor reads them by name, and a name changed is a field gone for it.
    #[test]
    fn a_session_s_json_has_the_fields_the_spec_names() {
        let status = ProviderStatus {
            sessions: vec![SessionInfo {
                cookie: Some("h#2".into()),
                lag_changes: 7,
                queue_len: 3,
                ..session("127.0.0.1:40000", "people")
            }],
            running: true,
            ..stopped()
        };
        let json = serde_json::to_value(&status).unwrap();
        for field in ["store_id", "csn", "entries", "changelog", "sessions", "consumers"] {
            assert!(json.get(field).is_some(), "no {field}: {json}");
        }
        let s = &json["sessions"][0];
        let expected = [
            ("session_id", 1.into()),
            ("peer", "127.0.0.1:40000".into()),
            ("agreement", "people".into()),
            ("mode", "refresh-and-persist".into()),
            ("cookie", "h#2".into()),
            ("lag_changes", 7.into()),
            ("queue_len", 3.into()),
            ("connected_since", "2026-12-01T00:00:00Z".into()),
        ];
        for (field, value) in expected {
            assert_eq!(s.get(field), Some(&value), "{field}: {s}");
        }
    }

    /// A session's `lag_changes` is counted when `status` asks, from the position it last
    /// acknowledged: a consumer that stopped acknowledging falls further behind with each
    /// write, which is what an alert on a session's lag waits for.
    #[test]
    fn a_session_s_lag_grows_with_each_write_past_its_acknowledged_position() {
        use tether_protocol::{Cookie, Csn};
        let (_tmp, dir) = two_changes();
        let registry = Registry::default();
        let cancel = tokio_util::sync::CancellationToken::new();
        let registration = registry.register(session("127.0.0.1:40000", "people"), &cancel);
        // Its acknowledgement of CSN 1, when CSN 1 was the newest.
        registration.acked(&Cookie { history: dir.history(), csn: Csn(1) }, Csn(1));
        let status = ProviderStatus::collect(&dir, &registry, Some("[::1]:7389".parse().unwrap())).unwrap();
        assert_eq!(status.sessions[0].lag_changes, 1, "CSN 2 written since");
    }

    /// When `csn` committed, in milliseconds since the epoch, as its changelog record says.
    fn committed_ms(dir: &Directory, csn: u64) -> u64 {
        dir.changelog().get(tether_protocol::Csn(csn)).unwrap().expect("a record").time_ms
    }

    /// A consumer's lag in seconds runs from the commit of the oldest change it lacks,
    /// by the provider's clock: whatever the consumer's own clock says and however long
    /// it has been away, a replica whose oldest missing change was written 99.999 s ago
    /// reads 99 s, one with every change 0; a writer lags nothing.
    #[test]
    fn a_lag_in_seconds_runs_from_the_oldest_change_not_acknowledged() {
        use crate::session::position_id;
        use tether_protocol::{Attributes, Change, Cookie, Csn, Dn, Value};
        let (_tmp, dir) = two_changes();
        // A third change a clock tick after the second, so that the two date apart.
        let second = committed_ms(&dir, 2);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64 <= second {
            assert!(std::time::Instant::now() < deadline, "the clock stands still");
            std::thread::yield_now();
        }
        let mut attrs = Attributes::default();
        attrs.add("objectClass", [Value::from("organizationalUnit")]).unwrap();
        dir.write(&Change::Add { dn: Dn::parse("ou=groups,dc=example,dc=com").unwrap(), attrs }).unwrap();
        let third = committed_ms(&dir, 3);
        assert!(third > second);

        dir.record_consumer(&position_id("people", "behind-1"), Csn(2)).unwrap();
        dir.record_consumer(&position_id("people", "behind-2"), Csn(1)).unwrap();
        dir.record_consumer(&position_id("people", "current"), Csn(3)).unwrap();
        let registry = Registry::default();
        let cancel = tokio_util::sync::CancellationToken::new();
        let registration = registry.register(session("127.0.0.1:40000", "people"), &cancel);
        registration.acked(&Cookie { history: dir.history(), csn: Csn(2) }, Csn(2));
        let writer = SessionInfo { session_id: 2, ..session("127.0.0.1:40001", crate::server::WRITER) };
        let _writer = registry.register(writer, &cancel);

        let now_ms = third + 99_999;
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_millis(now_ms);
        let status = ProviderStatus::collect_at(&dir, &registry, Some("[::1]:7389".parse().unwrap()), now).unwrap();
        let lags: Vec<(&str, Option<u64>)> =
            status.consumers.iter().map(|c| (c.client.as_str(), c.lag_seconds)).collect();
        let since_second = (now_ms - second) / 1000;
        assert!(since_second >= 100);
        assert_eq!(lags, [("behind-2", Some(since_second)), ("behind-1", Some(99)), ("current", Some(0))]);
        let sessions: Vec<(&str, Option<u64>)> =
            status.sessions.iter().map(|s| (s.agreement.as_str(), s.lag_seconds)).collect();
        assert_eq!(sessions, [("people", Some(99)), (crate::server::WRITER, None)]);

        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["sessions"][0]["lag_seconds"], 99, "{json}");
        assert_eq!(json["consumers"][1]["lag_seconds"], 99, "{json}");
        let text = status.to_text();
        let header = text.lines().find(|l| l.starts_with("PEER")).expect("a header");
        let row = text.lines().find(|l| l.starts_with("127.0.0.1:40000")).expect("a row");
        let end = header.find("BEHIND").unwrap() + "BEHIND".len();
        assert_eq!(row[..end].split_whitespace().last(), Some("99s"), "\n{text}");
        let header = text.lines().find(|l| l.starts_with("AGREEMENT")).expect("a header");
        let known = text.lines().find(|l| l.starts_with("people ") && l.contains(" behind-1 ")).unwrap();
        let end = header.find("BEHIND").unwrap() + "BEHIND".len();
        assert_eq!(known[..end].split_whitespace().last(), Some("99s"), "\n{text}");

        // A clock stepped back behind the commits reads as current, not as an age of
        // some 584 million years.
        let before = std::time::UNIX_EPOCH + std::time::Duration::from_millis(committed_ms(&dir, 1) - 5_000);
        let status = ProviderStatus::collect_at(&dir, &registry, None, before).unwrap();
        assert!(status.consumers.iter().all(|c| c.lag_seconds == Some(0)), "{:?}", status.consumers);
    }

    /// A session that has acknowledged nothing of this store (its full refresh under
    /// way) lacks every change, so its lag in seconds runs from the oldest change the
    /// changelog dates: shown as unknown, a consumer stuck in its first refresh for hours
    /// would never trip an alert on the lag.
    #[test]
    fn a_session_that_acknowledged_nothing_yet_lags_since_the_oldest_change() {
        let (_tmp, dir) = two_changes();
        let registry = Registry::default();
        let _refreshing =
            registry.register(session("127.0.0.1:40000", "people"), &tokio_util::sync::CancellationToken::new());
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_millis(committed_ms(&dir, 1) + 42_000);
        let status = ProviderStatus::collect_at(&dir, &registry, Some("[::1]:7389".parse().unwrap()), now).unwrap();
        assert_eq!(status.sessions[0].cookie, None);
        assert_eq!((status.sessions[0].lag_changes, status.sessions[0].lag_seconds), (2, Some(42)));
    }

    /// Where the changelog no longer holds the oldest change a consumer lacks, the oldest
    /// record it does hold dates it (a lower bound), and where it holds none of them (an
    /// offline load's entries have no records) the lag in seconds is unknown: `null`,
    /// and `-` in the table, never 0, which would read as current.
    #[test]
    fn a_lag_the_changelog_cannot_date_is_unknown_and_a_trimmed_one_is_dated_by_what_is_left() {
        use crate::session::position_id;
        use tether_protocol::{Attributes, Change, Csn, Dn, Value};
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        let mut attrs = Attributes::default();
        attrs.add("objectClass", [Value::from("domain")]).unwrap();
        let loaded = dir.bulk_add(&[(Dn::parse("dc=example,dc=com").unwrap(), attrs, None)]).unwrap();
        dir.flush().unwrap();
        assert_eq!(dir.changelog().records(Csn::ZERO, loaded).count(), 0, "a load keeps no records");
        dir.record_consumer(&position_id("people", "empty"), Csn::ZERO).unwrap();
        let now = SystemTime::now();
        let status = ProviderStatus::collect_at(&dir, &Registry::default(), None, now).unwrap();
        assert_eq!((status.consumers[0].lag_changes, status.consumers[0].lag_seconds), (loaded.0, None));
        assert_eq!(serde_json::to_value(&status).unwrap()["consumers"][0]["lag_seconds"], serde_json::Value::Null);
        let row = status.to_text().lines().find(|l| l.starts_with("people ")).unwrap().to_owned();
        assert!(row.contains(" - "), "{row}");

        // Three changes, the first two trimmed: a consumer that lacks all three is dated
        // by the third.
        for ou in ["a", "b", "c"] {
            let mut attrs = Attributes::default();
            attrs.add("objectClass", [Value::from("organizationalUnit")]).unwrap();
            dir.write(&Change::Add { dn: Dn::parse(&format!("ou={ou},dc=example,dc=com")).unwrap(), attrs }).unwrap();
        }
        let newest = dir.durable_csn().0;
        let third = committed_ms(&dir, newest);
        let policy = tether_store::RetentionPolicy {
            max_changes: Some(1),
            max_age: None,
            hold_for_consumers: std::time::Duration::ZERO,
            up_since_ms: 0,
        };
        dir.trim(&policy, third).unwrap();
        assert_eq!(dir.changelog().oldest().unwrap(), Some(Csn(newest)));
        // The trim passed the known consumer's position, which goes with it; a session
        // still at the load's CSN is what is left to ask about.
        let registry = Registry::default();
        let cancel = tokio_util::sync::CancellationToken::new();
        let registration = registry.register(session("127.0.0.1:40000", "people"), &cancel);
        registration.acked(&tether_protocol::Cookie { history: dir.history(), csn: loaded }, loaded);
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_millis(third + 7_000);
        let status = ProviderStatus::collect_at(&dir, &registry, Some("[::1]:7389".parse().unwrap()), now).unwrap();
        assert_eq!((status.sessions[0].lag_changes, status.sessions[0].lag_seconds), (3, Some(7)));
    }
}
