//! The consumer's page of metrics (`metrics_listen`): what `status --json` says of the
//! process and each agreement, as Prometheus counters and gauges under the names
//! `docs/operations.md` lists.
//!
//! Every agreement has every family, each state and each disconnect reason a series of
//! its own from the first scrape (a counter that appears only at its first increment
//! makes `increase()` miss that increment); the agreement is the label that ties them.
//! Figures that do not exist yet (no cookie, no error, no certificate) are left out
//! rather than written as 0, which would read as a real value.

use tether_config::metrics::{unix_seconds, Exposition, Kind};
use tether_protocol::message::RefreshKind;
use tether_protocol::Cookie;

use crate::reason::{Reason, State};
use crate::status::{AgreementStatus, ConsumerStatus};

/// The page for `status`.
pub fn render(status: &ConsumerStatus) -> String {
    let mut page = Exposition::new();
    page.family("tether_consumer_info", Kind::Gauge, "Always 1: this consumer's id and build, as labels.")
        .sample(&[("consumer_id", &status.consumer_id), ("version", env!("CARGO_PKG_VERSION"))], 1u64);
    if let Some(at) = unix_seconds(&status.started_at) {
        page.family(
            "tether_consumer_start_time_seconds",
            Kind::Gauge,
            "When the process started (Unix time): every counter counts from here.",
        )
        .sample(&[], at);
    }
    page.family(
        "tether_consumer_store_failed",
        Kind::Gauge,
        "1 once the store has failed: no agreement applies anything more until the process is restarted.",
    )
    .sample(&[], status.store_error.is_some());
    page.family(
        "tether_consumer_trees_to_free",
        Kind::Gauge,
        "Trees of discarded replicas still being freed in the background.",
    )
    .sample(&[], status.trees_to_free);

    let agreements = &status.agreements;
    let each = |page: &mut Exposition, name, kind, help, value: &dyn Fn(&AgreementStatus) -> Option<u64>| {
        let mut family = page.family(name, kind, help);
        for a in agreements {
            if let Some(v) = value(a) {
                family.sample(&[("agreement", &a.name)], v);
            }
        }
    };
    {
        let mut family = page.family(
            "tether_consumer_agreement_info",
            Kind::Gauge,
            "Always 1: each agreement's provider, mode and whether it uses TLS, as labels.",
        );
        for a in agreements {
            let tls = if a.tls { "true" } else { "false" };
            family.sample(&[("agreement", &a.name), ("provider", &a.provider), ("mode", &a.mode), ("tls", tls)], 1u64);
        }
    }
    {
        let mut family = page.family(
            "tether_consumer_agreement_state",
            Kind::Gauge,
            "1 for the state each agreement's supervisor is in, 0 for the others.",
        );
        for a in agreements {
            for state in State::ALL {
                family.sample(&[("agreement", &a.name), ("state", state.as_str())], a.state == state);
            }
        }
    }
    each(&mut page, "tether_consumer_entries", Kind::Gauge, "Entries in the replica that searches read.", &|a| {
        Some(a.entries as u64)
    });
    each(
        &mut page,
        "tether_consumer_lag_seconds",
        Kind::Gauge,
        "Seconds since the replica was last known current: 0 while persisting and caught up.",
        &|a| Some(a.lag_seconds),
    );
    each(
        &mut page,
        "tether_consumer_lag_changes",
        Kind::Gauge,
        "Changes received but not yet durable and acknowledged.",
        &|a| Some(a.lag_changes),
    );
    each(
        &mut page,
        "tether_consumer_replica_csn",
        Kind::Gauge,
        "The CSN of the replica's durable cookie: the provider's tether_provider_csn less this is how many changes behind.",
        &|a| a.cookie.as_deref().and_then(|c| c.parse::<Cookie>().ok()).map(|c| c.csn.0),
    );
    each(
        &mut page,
        "tether_consumer_refresh_received_entries",
        Kind::Gauge,
        "Entries received by the current (or last) full or present refresh, across its resumptions.",
        &|a| Some(a.refresh_received),
    );
    each(
        &mut page,
        "tether_consumer_applied_total",
        Kind::Counter,
        "Replicated operations that changed the replica.",
        &|a| Some(a.applied),
    );
    each(
        &mut page,
        "tether_consumer_skipped_total",
        Kind::Counter,
        "Replicated operations already reflected (replays), applied as no-ops.",
        &|a| Some(a.skipped),
    );
    each(
        &mut page,
        "tether_consumer_duplicates_total",
        Kind::Counter,
        "Changes applied a second time, found by the apply audit (TETHER_APPLY_AUDIT=1): always 0.",
        &|a| Some(a.duplicates),
    );
    each(
        &mut page,
        "tether_consumer_reconnects_total",
        Kind::Counter,
        "Connections attempted after the first.",
        &|a| Some(a.reconnects),
    );
    {
        let mut family = page.family(
            "tether_consumer_disconnects_total",
            Kind::Counter,
            "Sessions ended, by the reason they ended.",
        );
        for a in agreements {
            for reason in Reason::ALL {
                let n = a.disconnects.get(&reason).copied().unwrap_or(0);
                family.sample(&[("agreement", &a.name), ("reason", reason.as_str())], n);
            }
        }
    }
    {
        let mut family = page.family(
            "tether_consumer_refreshes_total",
            Kind::Counter,
            "Refreshes received, by kind (full, delta, present).",
        );
        for a in agreements {
            for kind in RefreshKind::ALL {
                let n = a.refreshes.get(kind.as_str()).copied().unwrap_or(0);
                family.sample(&[("agreement", &a.name), ("kind", kind.as_str())], n);
            }
        }
    }
    each(
        &mut page,
        "tether_consumer_resumed_refreshes_total",
        Kind::Counter,
        "Full or present refreshes continued where an interrupted one stood, instead of starting over.",
        &|a| Some(a.resumed_refreshes),
    );
    each(
        &mut page,
        "tether_consumer_protocol_version",
        Kind::Gauge,
        "The protocol version of the current or last session: during an upgrade, whether its provider runs an older build.",
        &|a| a.protocol_version.map(u64::from),
    );
    each(
        &mut page,
        "tether_consumer_last_error_timestamp_seconds",
        Kind::Gauge,
        "When the agreement's last error happened (Unix time); the error is in status's last_error.",
        &|a| a.last_error_at.as_deref().and_then(unix_seconds),
    );
    each(
        &mut page,
        "tether_consumer_provider_certificate_expiry_timestamp_seconds",
        Kind::Gauge,
        "When the certificate the provider presented last expires (Unix time); TLS agreements only.",
        &|a| {
            a.provider_certificate
                .as_ref()
                .and_then(|p| p.validity.not_after.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
        },
    );
    page.finish()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tether_config::metrics::{parse, value, Sample};

    use super::*;
    use crate::status::StatusHandle;

    /// The page of a consumer of two agreements: `people` persisting over TLS after a
    /// few disconnections and refreshes, `groups` never connected.
    fn page() -> Vec<Sample> {
        let people = StatusHandle::new("people", "ldap-1.example.com:7389", "refresh-and-persist");
        people.update(|s| {
            s.state = State::Persisting;
            s.tls = true;
            s.cookie = Some("0191d2a4-7c1e-7000-8000-000000000001#9007199254740993".into());
            s.entries = 1200;
            s.lag_changes = 3;
            s.applied = 5000;
            s.skipped = 7;
            s.reconnects = 4;
            s.disconnects = BTreeMap::from([(Reason::KeepaliveTimeout, 2), (Reason::ConnectionLost, 1)]);
            s.refreshes = BTreeMap::from([("full".into(), 1), ("delta".into(), 3)]);
            s.resumed_refreshes = 1;
            s.refresh_received = 1200;
            s.protocol_version = Some(3);
            s.last_error_at = Some("2026-12-06T08:00:00Z".into());
            s.last_error = Some("provider silent past keepalive timeout".into());
        });
        let groups = StatusHandle::new("groups", "127.0.0.1:7389", "refresh-only");
        let status = ConsumerStatus {
            started_at: "2026-12-06T07:00:00Z".into(),
            consumer_id: "c-1".into(),
            trees_to_free: 2,
            ..ConsumerStatus::for_test(vec![
                groups.snapshot(),
                AgreementStatus { lag_seconds: 12, ..people.snapshot() },
            ])
        };
        parse(&render(&status)).expect("a page a scraper reads")
    }

    #[test]
    fn each_figure_of_status_is_its_metric_per_agreement() {
        let page = page();
        let people = |name: &str| value(&page, name, &[("agreement", "people")]);
        assert_eq!(people("tether_consumer_entries"), Some(1200.0));
        assert_eq!(people("tether_consumer_lag_seconds"), Some(12.0));
        assert_eq!(people("tether_consumer_lag_changes"), Some(3.0));
        assert_eq!(people("tether_consumer_applied_total"), Some(5000.0));
        assert_eq!(people("tether_consumer_skipped_total"), Some(7.0));
        assert_eq!(people("tether_consumer_duplicates_total"), Some(0.0));
        assert_eq!(people("tether_consumer_reconnects_total"), Some(4.0));
        assert_eq!(people("tether_consumer_resumed_refreshes_total"), Some(1.0));
        assert_eq!(people("tether_consumer_refresh_received_entries"), Some(1200.0));
        assert_eq!(people("tether_consumer_protocol_version"), Some(3.0));
        // 2026-12-06T08:00:00Z.
        assert_eq!(people("tether_consumer_last_error_timestamp_seconds"), Some(1_796_544_000.0));
        assert_eq!(value(&page, "tether_consumer_start_time_seconds", &[]), Some(1_796_540_400.0));
        assert_eq!(value(&page, "tether_consumer_trees_to_free", &[]), Some(2.0));
        assert_eq!(value(&page, "tether_consumer_store_failed", &[]), Some(0.0));
        let info = page.iter().find(|s| s.name == "tether_consumer_info").unwrap();
        assert_eq!((info.label("consumer_id"), info.value), (Some("c-1"), 1.0));
        let people_info = page
            .iter()
            .find(|s| s.name == "tether_consumer_agreement_info" && s.label("agreement") == Some("people"))
            .unwrap();
        assert_eq!(people_info.label("provider"), Some("ldap-1.example.com:7389"));
        assert_eq!(people_info.label("mode"), Some("refresh-and-persist"));
        assert_eq!(people_info.label("tls"), Some("true"));
    }

    /// The build is a label of `tether_consumer_info`, as `docs/operations.md` lists it:
    /// during an upgrade it is what tells which consumers run the new one.
    #[test]
    fn the_info_series_names_the_build() {
        let page = page();
        let info = page.iter().find(|s| s.name == "tether_consumer_info").unwrap();
        assert_eq!(info.label("version"), Some(env!("CARGO_PKG_VERSION")));
    }

    /// What a refresh has received so far is its own figure, not the replica's size:
    /// during a refresh the two differ, and the first is what tells it is progressing.
    #[test]
    fn a_refresh_s_progress_is_its_received_entries_not_the_replica_s_size() {
        let h = StatusHandle::new("people", "127.0.0.1:7389", "refresh-and-persist");
        h.update(|s| {
            s.state = State::Refreshing;
            s.entries = 1200;
            s.refresh_received = 300;
        });
        let page = parse(&render(&ConsumerStatus::for_test(vec![h.snapshot()]))).unwrap();
        let people = |name| value(&page, name, &[("agreement", "people")]);
        assert_eq!(people("tether_consumer_refresh_received_entries"), Some(300.0));
        assert_eq!(people("tether_consumer_entries"), Some(1200.0));
    }

    /// A CSN past 2^53, which a float would round, is exact in the page's text.
    #[test]
    fn the_replica_csn_is_exact_and_absent_without_a_cookie() {
        let h = StatusHandle::new("people", "127.0.0.1:7389", "refresh-and-persist");
        h.update(|s| s.cookie = Some("0191d2a4-7c1e-7000-8000-000000000001#9007199254740993".into()));
        let status = ConsumerStatus::for_test(vec![h.snapshot()]);
        assert!(render(&status).contains("\ntether_consumer_replica_csn{agreement=\"people\"} 9007199254740993\n"));
        let page = page();
        assert_eq!(value(&page, "tether_consumer_replica_csn", &[("agreement", "groups")]), None);
        assert_eq!(value(&page, "tether_consumer_last_error_timestamp_seconds", &[("agreement", "groups")]), None);
        assert_eq!(value(&page, "tether_consumer_protocol_version", &[("agreement", "groups")]), None);
        // Unparseable start: the family is left out, not written as 1970.
        assert!(!render(&status).contains("tether_consumer_start_time_seconds"));
    }

    /// The end of the certificate the provider presented is the series an alert on a
    /// provider's certificate reads (`docs/operations.md`): its name as listed there, its
    /// value the certificate's end, not its start; absent for a plain TCP agreement.
    #[test]
    fn the_provider_certificate_s_expiry_is_its_end_in_unix_time() {
        let secs = |s: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
        let validity =
            tether_config::certificate::Validity { not_before: secs(1_700_000_000), not_after: secs(1_798_761_600) };
        let tls = StatusHandle::new("people", "ldap-1.example.com:7389", "refresh-and-persist");
        let plain = StatusHandle::new("groups", "127.0.0.1:7389", "refresh-only");
        let status = ConsumerStatus::for_test(vec![
            AgreementStatus {
                tls: true,
                provider_certificate: Some(crate::provider_certificate::Presented {
                    provider: "ldap-1.example.com:7389".into(),
                    validity,
                    position: 0,
                }),
                ..tls.snapshot()
            },
            plain.snapshot(),
        ]);
        let page = parse(&render(&status)).unwrap();
        let expiry = |agreement| {
            value(&page, "tether_consumer_provider_certificate_expiry_timestamp_seconds", &[("agreement", agreement)])
        };
        assert_eq!(expiry("people"), Some(1_798_761_600.0));
        assert_eq!(expiry("groups"), None);
    }

    /// Each state and each reason is a series from the first scrape, so an alert on
    /// `state="closed"` or `increase(...{reason="exception"}[5m])` sees its first.
    #[test]
    fn every_state_and_reason_and_refresh_kind_is_a_series_from_the_start() {
        let page = page();
        for (agreement, now) in [("people", "persisting"), ("groups", "connecting")] {
            for state in State::ALL {
                let v = value(
                    &page,
                    "tether_consumer_agreement_state",
                    &[("agreement", agreement), ("state", state.as_str())],
                );
                assert_eq!(v, Some(f64::from(u8::from(state.as_str() == now))), "{agreement} {state}");
            }
            for reason in Reason::ALL {
                let want = match (agreement, reason) {
                    ("people", Reason::KeepaliveTimeout) => 2.0,
                    ("people", Reason::ConnectionLost) => 1.0,
                    _ => 0.0,
                };
                let labels = [("agreement", agreement), ("reason", reason.as_str())];
                assert_eq!(value(&page, "tether_consumer_disconnects_total", &labels), Some(want), "{labels:?}");
            }
            for kind in RefreshKind::ALL {
                let want = match (agreement, kind) {
                    ("people", RefreshKind::Full) => 1.0,
                    ("people", RefreshKind::Delta) => 3.0,
                    _ => 0.0,
                };
                let labels = [("agreement", agreement), ("kind", kind.as_str())];
                assert_eq!(value(&page, "tether_consumer_refreshes_total", &labels), Some(want), "{labels:?}");
            }
        }
    }
}
