//! The provider's page of metrics (`metrics_listen`): what `status --json` says of the
//! store, its changelog, the live sessions and every consumer whose position it keeps,
//! as Prometheus gauges under the names `docs/operations.md` lists.
//!
//! Sessions are labelled by agreement and consumer id, never by peer address or session
//! id, which change at every reconnection and would make a new series each time; two
//! sessions of one consumer and agreement (a cloned host, warned of in the log) are
//! summed, their lag the larger. Writers' sessions are counted apart.

use std::collections::BTreeMap;

use tether_config::metrics::{unix_seconds, Exposition, Kind};

use crate::status::ProviderStatus;

/// The page for `status`.
pub fn render(status: &ProviderStatus) -> String {
    let mut page = Exposition::new();
    page.family(
        "tether_provider_info",
        Kind::Gauge,
        "Always 1: the store's id, its current history and this build, as labels.",
    )
    .sample(
        &[("store_id", &status.store_id), ("history", &status.history), ("version", env!("CARGO_PKG_VERSION"))],
        1u64,
    );
    if let Some(at) = status.started_at.as_deref().and_then(unix_seconds) {
        page.family("tether_provider_start_time_seconds", Kind::Gauge, "When the process started (Unix time).")
            .sample(&[], at);
    }
    page.family("tether_provider_csn", Kind::Gauge, "The newest durable CSN: every change up to it is on disk.")
        .sample(&[], status.csn);
    page.family("tether_provider_entries", Kind::Gauge, "Entries in the directory.").sample(&[], status.entries);
    if let Some(oldest) = status.changelog.oldest {
        page.family("tether_provider_changelog_oldest_csn", Kind::Gauge, "The oldest CSN the changelog retains.")
            .sample(&[], oldest);
    }
    if let Some(newest) = status.changelog.newest {
        page.family("tether_provider_changelog_newest_csn", Kind::Gauge, "The newest CSN in the changelog.")
            .sample(&[], newest);
    }
    page.family(
        "tether_provider_changelog_floor_csn",
        Kind::Gauge,
        "A consumer whose cookie is at or above this CSN gets a delta; one below it, a present refresh.",
    )
    .sample(&[], status.changelog.floor);
    if let Some(at) = status.certificate_expires_at.as_deref().and_then(unix_seconds) {
        page.family(
            "tether_provider_certificate_expiry_timestamp_seconds",
            Kind::Gauge,
            "When the TLS certificate the provider serves expires (Unix time).",
        )
        .sample(&[], at);
    }

    let mut sessions: BTreeMap<(&str, &str), Sessions> = BTreeMap::new();
    let mut writers = 0u64;
    for s in &status.sessions {
        if s.agreement == crate::server::WRITER {
            writers += 1;
            continue;
        }
        let e = sessions.entry((&s.agreement, &s.client)).or_default();
        e.open += 1;
        e.lag_changes = e.lag_changes.max(s.lag_changes);
        e.lag_seconds = e.lag_seconds.max(s.lag_seconds);
        e.queued += s.queue_len as u64;
    }
    page.family("tether_provider_writer_sessions", Kind::Gauge, "Writers' sessions open now.").sample(&[], writers);
    let per_session = |page: &mut Exposition, name, help, value: &dyn Fn(&Sessions) -> Option<u64>| {
        let mut family = page.family(name, Kind::Gauge, help);
        for ((agreement, consumer), figures) in &sessions {
            if let Some(v) = value(figures) {
                family.sample(&[("agreement", agreement), ("consumer", consumer)], v);
            }
        }
    };
    per_session(
        &mut page,
        "tether_provider_sessions",
        "Replication sessions open now, by agreement and consumer id.",
        &|f| Some(f.open),
    );
    per_session(
        &mut page,
        "tether_provider_session_lag_changes",
        "Changes committed that the consumer's session has not had acknowledged: how far behind it is.",
        &|f| Some(f.lag_changes),
    );
    per_session(
        &mut page,
        "tether_provider_session_lag_seconds",
        "Seconds since the oldest change the session has not had acknowledged was committed, by the provider's clock.",
        &|f| f.lag_seconds,
    );
    per_session(
        &mut page,
        "tether_provider_session_queue_length",
        "Changes waiting in the session's outbound queue.",
        &|f| Some(f.queued),
    );

    let known = |page: &mut Exposition, name, help, value: &dyn Fn(&crate::status::KnownConsumer) -> Option<u64>| {
        let mut family = page.family(name, Kind::Gauge, help);
        for c in &status.consumers {
            if let Some(v) = value(c) {
                family.sample(&[("agreement", &c.agreement), ("consumer", &c.client)], v);
            }
        }
    };
    known(
        &mut page,
        "tether_provider_consumer_lag_changes",
        "Changes committed since the position the store keeps for each known consumer, connected or not.",
        &|c| Some(c.lag_changes),
    );
    known(
        &mut page,
        "tether_provider_consumer_lag_seconds",
        "Seconds since the oldest change past each known consumer's position was committed, by the provider's clock.",
        &|c| c.lag_seconds,
    );
    known(
        &mut page,
        "tether_provider_consumer_last_seen_timestamp_seconds",
        "When each known consumer's position was last recorded (Unix time).",
        &|c| unix_seconds(&c.last_seen),
    );
    known(&mut page, "tether_provider_consumer_connected", "1 while a session of the known consumer is open.", &|c| {
        Some(u64::from(c.connected))
    });
    page.finish()
}

/// The sessions of one agreement and consumer id, as one series each.
#[derive(Default)]
struct Sessions {
    /// How many are open.
    open: u64,
    /// The larger lag in changes.
    lag_changes: u64,
    /// The larger lag in seconds, where one is known (`None` sorts below any).
    lag_seconds: Option<u64>,
    /// Queued in all.
    queued: u64,
}

#[cfg(test)]
mod tests {
    use tether_config::metrics::{parse, value};

    use super::*;
    use crate::registry::SessionInfo;
    use crate::status::{ChangelogStatus, KnownConsumer};

    fn status() -> ProviderStatus {
        // A lag of 10 seconds for each change behind, none known for a session current.
        let session = |id, peer: &str, agreement: &str, client: &str, lag: u64, queue| SessionInfo {
            lag_changes: lag,
            lag_seconds: (lag > 0).then_some(lag * 10),
            queue_len: queue,
            ..SessionInfo::for_test(id, peer, agreement, client)
        };
        let known = |agreement: &str, client: &str, lag: u64, connected: bool| KnownConsumer {
            agreement: agreement.into(),
            client: client.into(),
            csn: 100 - lag,
            lag_changes: lag,
            // The connected one's dated, the other's not (its changes trimmed or loaded).
            lag_seconds: connected.then_some(lag * 10),
            last_seen: "2026-12-06T08:00:00Z".into(),
            connected,
        };
        ProviderStatus {
            running: true,
            started_at: Some("2026-12-06T07:00:00Z".into()),
            listen: Some("127.0.0.1:7389".into()),
            metrics_listen: None,
            certificate_expires_at: Some("2027-01-01T00:00:00Z".into()),
            store_id: "s-1".into(),
            history: "h-1".into(),
            csn: 9_007_199_254_740_993,
            entries: 1200,
            changelog: ChangelogStatus { oldest: Some(40), newest: Some(100), floor: 39 },
            sessions: vec![
                session(1, "127.0.0.1:40000", "people", "c-1", 5, 2),
                // The same consumer's id from another host: summed, the larger lag.
                session(2, "10.0.0.9:40000", "people", "c-1", 9, 3),
                session(3, "127.0.0.1:40001", "groups", "c-1", 0, 0),
                session(4, "127.0.0.1:40002", crate::server::WRITER, "w", 0, 0),
            ],
            unfinished_load: None,
            consumers: vec![known("people", "c-1", 5, true), known("people", "c-2", 60, false)],
        }
    }

    #[test]
    fn each_figure_of_status_is_its_metric() {
        let text = render(&status());
        let page = parse(&text).expect("a page a scraper reads");
        let one = |name: &str| value(&page, name, &[]);
        // Exact, though above 2^53.
        assert!(text.contains("\ntether_provider_csn 9007199254740993\n"), "{text}");
        assert_eq!(one("tether_provider_entries"), Some(1200.0));
        assert_eq!(one("tether_provider_changelog_oldest_csn"), Some(40.0));
        assert_eq!(one("tether_provider_changelog_newest_csn"), Some(100.0));
        assert_eq!(one("tether_provider_changelog_floor_csn"), Some(39.0));
        assert_eq!(one("tether_provider_start_time_seconds"), Some(1_796_540_400.0));
        assert_eq!(one("tether_provider_certificate_expiry_timestamp_seconds"), Some(1_798_761_600.0));
        assert_eq!(one("tether_provider_writer_sessions"), Some(1.0));
        let info = page.iter().find(|s| s.name == "tether_provider_info").unwrap();
        assert_eq!((info.label("store_id"), info.label("history")), (Some("s-1"), Some("h-1")));
    }

    /// The build is a label of `tether_provider_info`, as `docs/operations.md` lists it:
    /// during an upgrade it is what tells which providers run the new one.
    #[test]
    fn the_info_series_names_the_build() {
        let page = parse(&render(&status())).unwrap();
        let info = page.iter().find(|s| s.name == "tether_provider_info").unwrap();
        assert_eq!(info.label("version"), Some(env!("CARGO_PKG_VERSION")));
    }

    /// By agreement and consumer id: a consumer's two sessions are one series, the peer
    /// nowhere; a writer is no consumer.
    #[test]
    fn sessions_are_counted_by_agreement_and_consumer() {
        let page = parse(&render(&status())).unwrap();
        let people = [("agreement", "people"), ("consumer", "c-1")];
        let groups = [("agreement", "groups"), ("consumer", "c-1")];
        assert_eq!(value(&page, "tether_provider_sessions", &people), Some(2.0));
        assert_eq!(value(&page, "tether_provider_session_lag_changes", &people), Some(9.0));
        assert_eq!(value(&page, "tether_provider_session_queue_length", &people), Some(5.0));
        assert_eq!(value(&page, "tether_provider_sessions", &groups), Some(1.0));
        assert_eq!(value(&page, "tether_provider_session_lag_changes", &groups), Some(0.0));
        assert_eq!(value(&page, "tether_provider_session_lag_seconds", &people), Some(90.0), "the larger");
        assert_eq!(value(&page, "tether_provider_session_lag_seconds", &groups), None, "not known: left out, not 0");
        assert!(page.iter().all(|s| s.label("peer").is_none() && s.label("consumer") != Some("w")));
        assert_eq!(page.iter().filter(|s| s.name == "tether_provider_sessions").count(), 2);
    }

    /// A consumer's two sessions (a cloned host) are one series, which shows the worse
    /// of their lags in seconds whichever is listed last: the session that keeps up, or
    /// one whose lag is not known, must not hide the one falling behind from an alert.
    #[test]
    fn a_consumer_s_sessions_show_the_larger_lag_in_seconds_whichever_comes_last() {
        let session = |id, peer: &str, lag_seconds| SessionInfo {
            lag_seconds,
            ..SessionInfo::for_test(id, peer, "people", "c-1")
        };
        let people = [("agreement", "people"), ("consumer", "c-1")];
        for last in [Some(3), None] {
            let status = ProviderStatus {
                sessions: vec![session(1, "127.0.0.1:40000", Some(120)), session(2, "10.0.0.9:40000", last)],
                ..status()
            };
            let page = parse(&render(&status)).unwrap();
            assert_eq!(value(&page, "tether_provider_session_lag_seconds", &people), Some(120.0), "last {last:?}");
        }
    }

    #[test]
    fn known_consumers_are_there_connected_or_not() {
        let page = parse(&render(&status())).unwrap();
        let away = [("agreement", "people"), ("consumer", "c-2")];
        assert_eq!(value(&page, "tether_provider_consumer_lag_changes", &away), Some(60.0));
        assert_eq!(value(&page, "tether_provider_consumer_connected", &away), Some(0.0));
        assert_eq!(value(&page, "tether_provider_consumer_last_seen_timestamp_seconds", &away), Some(1_796_544_000.0));
        let here = [("agreement", "people"), ("consumer", "c-1")];
        assert_eq!(value(&page, "tether_provider_consumer_connected", &here), Some(1.0));
        assert_eq!(value(&page, "tether_provider_consumer_lag_changes", &here), Some(5.0));
        assert_eq!(value(&page, "tether_provider_consumer_lag_seconds", &here), Some(50.0));
        assert_eq!(value(&page, "tether_provider_consumer_lag_seconds", &away), None, "not known: left out, not 0");
    }

    /// A changelog trimmed to nothing has no oldest or newest: left out, not 0.
    #[test]
    fn an_empty_changelog_has_no_extent_and_no_certificate_no_expiry() {
        let status = ProviderStatus {
            changelog: ChangelogStatus { oldest: None, newest: None, floor: 7 },
            certificate_expires_at: None,
            ..status()
        };
        let page = parse(&render(&status)).unwrap();
        let one = |name: &str| value(&page, name, &[]);
        assert_eq!(one("tether_provider_changelog_oldest_csn"), None);
        assert_eq!(one("tether_provider_changelog_newest_csn"), None);
        assert_eq!(one("tether_provider_changelog_floor_csn"), Some(7.0));
        assert_eq!(one("tether_provider_certificate_expiry_timestamp_seconds"), None);
    }
}
