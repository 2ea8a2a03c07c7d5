//! The certificate an agreement's provider presented in its last TLS handshake, as this
//! consumer warns of it coming to expire: in its log as the session meets it and then as
//! [`tether_config::certificate_watch`] sees its stage turn, and from `status`.
//!
//! Why: the provider says so of its own certificate, but in its own log and `status`,
//! which the consumer's operator often does not read (another team, another machine).
//! On the day it expires every TLS session of the agreement is refused (`certificate
//! expired`) and the replica goes stale; the consumer's operator, who saw nothing coming,
//! then learns of it from the backoff. rustls accepts a certificate that expires tomorrow
//! without a word; this is that word. A session already running goes on past the end
//! (TLS checks the certificate once, in the handshake), so the expiry is said as a refusal
//! to come, at the next connection.

use std::time::SystemTime;

use tether_config::certificate::{Stage, Validity};
use tether_config::certificate_watch::Watched;

/// What an agreement's provider presented: the address it was reached at, which the
/// warning names, and the validity of the certificate of its chain that ends first (its
/// own, or a CA certificate between its own and this consumer's `ca_file`, whose dates
/// this consumer checks just the same: [`tether_config::certificate::chain_end`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    /// The agreement's `provider`.
    pub provider: String,
    /// The validity of the certificate whose end ends the chain's.
    pub validity: Validity,
    /// That certificate's place in the chain (0: the provider's own).
    pub position: usize,
}

impl Presented {
    /// What a TLS session with `provider` found, from the DER of the chain it presented;
    /// `None` if its first certificate's dates do not read.
    pub fn of(provider: &str, chain: &[rustls_pki_types::CertificateDer<'_>]) -> Option<Self> {
        let (position, validity) = tether_config::certificate::chain_end(chain.iter().map(|c| c.as_ref()))?;
        Some(Self { provider: provider.to_owned(), validity, position })
    }
}

impl Watched for Presented {
    fn validity(&self) -> Validity {
        self.validity
    }

    fn warning(&self, now: SystemTime) -> Option<String> {
        warning(&self.validity, &self.provider, self.position, now)
    }
}

/// What this consumer's operator should hear of the certificate `provider` presented, of
/// validity `v`, at `now`: that it expires within its notice, has expired, or is not
/// valid yet (this machine's clock, since the handshake took it); `None` while it is
/// valid for longer. The renewal is the provider operator's to do, so the words say whom
/// to ask, and what this agreement will do meanwhile.
pub fn warning(v: &Validity, provider: &str, position: usize, now: SystemTime) -> Option<String> {
    let at = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    let which = match position {
        0 => format!("the certificate of provider {provider}"),
        n => format!(
            "the {} certificate of the chain provider {provider} presents (a CA's, between its own and this \
             consumer's ca_file)",
            tether_config::certificate::ordinal(n + 1)
        ),
    };
    match v.stage(now) {
        Stage::Valid => None,
        Stage::Expiring => {
            let days = v.days_left(now);
            Some(format!(
                "{which} expires at {} (in {days} day{}): from then on this \
                 consumer refuses it (certificate expired) and the agreement stops replicating until it is \
                 renewed; ask the provider's operator to renew it (replace its files and reload the provider)",
                at(v.not_after),
                if days == 1 { "" } else { "s" }
            ))
        }
        Stage::Expired => Some(format!(
            "{which} expired at {}: the session under way goes on, but this \
             consumer refuses it (certificate expired) at the next connection, until the provider's operator \
             renews it",
            at(v.not_after)
        )),
        // The handshake refuses both; seen here only if this machine's clock moved back
        // since, or the certificate's dates read otherwise than rustls read them.
        Stage::NotYetValid | Stage::NeverValid => Some(format!(
            "{which} is not valid until {} by this machine's clock (is it \
             right?): this consumer refuses it at the next connection until then",
            at(v.not_before)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn a_provider_certificate_in_its_notice_or_past_its_end_is_warned_of_and_a_valid_one_is_not() {
        let v = Validity { not_before: at("2026-01-01T00:00:00Z"), not_after: at("2027-01-01T00:00:00Z") };
        let provider = "ldap1.example.com:7389";
        assert_eq!(warning(&v, provider, 0, at("2026-12-18T00:00:00Z")), None, "more than two weeks ahead");
        assert_eq!(
            warning(&v, provider, 0, at("2026-12-18T00:00:01Z")).unwrap(),
            "the certificate of provider ldap1.example.com:7389 expires at 2027-01-01T00:00:00Z (in 14 days): from \
             then on this consumer refuses it (certificate expired) and the agreement stops replicating until it \
             is renewed; ask the provider's operator to renew it (replace its files and reload the provider)"
        );
        let last = warning(&v, provider, 0, at("2026-12-31T23:00:00Z")).unwrap();
        assert!(last.contains("expires at 2027-01-01T00:00:00Z (in 1 day): "), "{last}");
        let past = warning(&v, provider, 0, at("2027-01-01T00:00:01Z")).unwrap();
        assert!(past.starts_with("the certificate of provider ldap1.example.com:7389 expired at 2027-01-01T00:00:00Z: the session under way goes on"), "{past}");
        let early = warning(&v, provider, 0, at("2025-12-31T00:00:00Z")).unwrap();
        assert!(early.contains("is not valid until 2026-01-01T00:00:00Z by this machine's clock"), "{early}");
    }

    /// An intermediate CA certificate the provider presents that ends before the
    /// provider's own ends the chain with it (this consumer checks its dates too), and the
    /// warning names it so the provider's operator knows what to renew.
    #[test]
    fn an_intermediate_that_ends_first_is_the_end_warned_of() {
        let date = |(y, m, d): (i32, u8, u8)| rcgen::date_time_ymd(y, m, d);
        let ca = |name: &str, not_after| {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(rcgen::DnType::CommonName, name);
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.not_before = date((2026, 1, 1));
            params.not_after = date(not_after);
            (params, rcgen::KeyPair::generate().unwrap())
        };
        let (root, root_key) = ca("Example Root", (2040, 1, 1));
        let root = root.self_signed(&root_key).unwrap();
        let (intermediate, intermediate_key) = ca("Example Intermediate", (2026, 12, 20));
        let intermediate = intermediate.signed_by(&intermediate_key, &root, &root_key).unwrap();
        let mut own = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        own.not_after = date((2030, 1, 1));
        let own = own.signed_by(&rcgen::KeyPair::generate().unwrap(), &intermediate, &intermediate_key).unwrap();
        let chain = [own.der().clone(), intermediate.der().clone(), root.der().clone()];
        let presented = Presented::of("ldap1.example.com:7389", &chain).unwrap();
        assert_eq!((presented.position, presented.validity.not_after), (1, at("2026-12-20T00:00:00Z")));
        assert_eq!(
            presented.warning(at("2026-12-10T00:00:00Z")).unwrap(),
            "the 2nd certificate of the chain provider ldap1.example.com:7389 presents (a CA's, between its own and \
             this consumer's ca_file) expires at 2026-12-20T00:00:00Z (in 10 days): from then on this consumer \
             refuses it (certificate expired) and the agreement stops replicating until it is renewed; ask the \
             provider's operator to renew it (replace its files and reload the provider)"
        );
    }

    #[test]
    fn what_a_provider_presented_is_read_from_the_first_certificate_of_its_chain() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut own = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        own.not_before = rcgen::date_time_ymd(2026, 1, 1);
        own.not_after = rcgen::date_time_ymd(2026, 12, 20);
        let mut ca = rcgen::CertificateParams::new(vec!["Example CA".to_owned()]).unwrap();
        ca.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let chain = [own.self_signed(&key).unwrap().der().clone(), ca.self_signed(&key).unwrap().der().clone()];
        let presented = Presented::of("127.0.0.1:7389", &chain).unwrap();
        assert_eq!(presented.validity.not_after, at("2026-12-20T00:00:00Z"), "the provider's own, not its CA's");
        assert_eq!(presented.provider, "127.0.0.1:7389");
        assert_eq!(Presented::of("127.0.0.1:7389", &[]), None);
        assert_eq!(Presented::of("127.0.0.1:7389", &[rustls_pki_types::CertificateDer::from(vec![0x30, 0x00])]), None);
    }
}
