//! What the provider says of the certificate it serves (`tls.cert_file`'s first): that
//! it has expired, expires soon, is not valid yet, or is a CA's; and of a CA certificate
//! the file sends along that ends before it ([`tether_config::certificate::chain_end`]),
//! which consumers refuse the chain for just the same. The dates and the stage
//! are read by [`tether_config::certificate`]; the words, which name the file and what to
//! do with it, are the provider's.
//!
//! Why: rustls checks none of it when it loads the server's own certificate, so a
//! provider with an expired one, or with its CA's certificate given as its own, started
//! and reloaded without a word, and every TLS consumer then failed (`certificate
//! expired`, `CaUsedAsEndEntity`) while `write`, which pins the certificate, did not. The
//! provider warns at start, in a reload's reply, from `status` and, as the certificate
//! comes to expire, in its log ([`Served`] is what the watch follows). A warning, not a
//! refusal: the file is the operator's to renew, a clock may be wrong, and `write` still
//! works.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tether_config::certificate::{is_ca, Stage, Validity};
use tether_config::certificate_watch::Watched;

/// Which certificate of `file` a warning is about, in its words: the provider's own (the
/// first, `position` 0), or a CA certificate of the chain after it.
fn which(file: &Path, position: usize) -> String {
    match position {
        0 => format!("the certificate in {}", file.display()),
        n => format!(
            "the {} certificate in {} (a CA's, which the chain served goes through)",
            tether_config::certificate::ordinal(n + 1),
            file.display()
        ),
    }
}

/// What an operator should hear about using the certificate at `position` in `file`
/// (0: the provider's own), of validity `v`, at `now`: that it has expired, expires
/// within its notice, or is not valid yet; `None` while it is valid for longer.
pub fn warning(v: &Validity, file: &Path, position: usize, now: SystemTime) -> Option<String> {
    let at = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    let which = which(file, position);
    match v.stage(now) {
        // What `openssl x509 -days -1` makes: "expired" would send the operator to a
        // date that explains nothing, and renewing it the same way changes nothing.
        Stage::NeverValid => Some(format!(
            "{which} ends before it begins (notAfter {} is earlier than notBefore {}), so it is \
             never valid: TLS consumers refuse it; issue it again with a validity period that ends after it \
             begins, then replace the files and reload",
            at(v.not_after),
            at(v.not_before)
        )),
        Stage::Expired => Some(format!(
            "{which} expired at {}: TLS consumers refuse it (certificate expired) until it is \
             renewed (replace the files and reload)",
            at(v.not_after)
        )),
        Stage::Expiring => {
            let days = v.days_left(now);
            Some(format!(
                "{which} expires at {} (in {days} day{}): TLS consumers refuse it from then on; \
                 renew it before then (replace the files and reload)",
                at(v.not_after),
                if days == 1 { "" } else { "s" }
            ))
        }
        Stage::NotYetValid => Some(format!(
            "{which} is not valid until {} (is this machine's clock right?): TLS consumers \
             refuse it until then",
            at(v.not_before)
        )),
        Stage::Valid => None,
    }
}

/// What an operator should hear about serving the DER certificate in `file` as the
/// provider's own: that it is a CA's (its basicConstraints say `cA`), which every TLS
/// consumer refuses as `CaUsedAsEndEntity`; `None` otherwise, or if it does not read.
pub fn ca_warning(der: &[u8], file: &Path) -> Option<String> {
    is_ca(der)?.then(|| {
        format!(
            "the certificate in {} is a certificate authority's (basicConstraints CA:TRUE), not a server's: TLS \
             consumers refuse it (CaUsedAsEndEntity); give cert_file a certificate the CA issued for this \
             provider's name, then the CA's if it is an intermediate",
            file.display()
        )
    })
}

/// The certificate the provider serves, as the running provider's watch on its expiry
/// follows it: start and reload set it, so a file renewed on disk and not reloaded is
/// still the old certificate to consumers, and to the watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// `tls.cert_file`.
    pub file: PathBuf,
    /// The validity of the certificate whose end ends the chain's: the provider's own,
    /// or a CA certificate after it that ends first ([`tether_config::certificate::chain_end`]).
    pub validity: Validity,
    /// That certificate's place in the file (0: the provider's own).
    pub position: usize,
}

impl Watched for Served {
    fn validity(&self) -> Validity {
        self.validity
    }

    fn warning(&self, now: SystemTime) -> Option<String> {
        warning(&self.validity, &self.file, self.position, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn a_ca_s_certificate_is_warned_of_and_a_server_s_is_not() {
        let file = Path::new("/etc/tether/tls/provider.crt");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(vec!["Example CA".to_owned()]).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&key).unwrap();
        let warning = ca_warning(ca.der(), file).expect("a CA's certificate is warned of");
        assert!(
            warning.starts_with("the certificate in /etc/tether/tls/provider.crt is a certificate authority's")
                && warning.contains("CaUsedAsEndEntity"),
            "{warning}"
        );
        let server = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        assert_eq!(ca_warning(server.self_signed(&key).unwrap().der(), file), None);
    }

    #[test]
    fn an_expired_expiring_or_not_yet_valid_certificate_is_warned_of_and_a_valid_one_is_not() {
        let file = Path::new("/etc/tether/tls/provider.crt");
        let v = Validity { not_before: at("2020-01-01T00:00:00Z"), not_after: at("2020-01-31T00:00:00Z") };
        assert_eq!(warning(&v, file, 0, at("2020-01-15T00:00:00Z")), None);
        assert_eq!(
            warning(&v, file, 0, at("2026-12-02T00:00:00Z")).unwrap(),
            "the certificate in /etc/tether/tls/provider.crt expired at 2020-01-31T00:00:00Z: TLS consumers refuse \
             it (certificate expired) until it is renewed (replace the files and reload)"
        );
        assert_eq!(
            warning(&v, file, 0, at("2020-01-21T00:00:01Z")).unwrap(),
            "the certificate in /etc/tether/tls/provider.crt expires at 2020-01-31T00:00:00Z (in 10 days): TLS \
             consumers refuse it from then on; renew it before then (replace the files and reload)"
        );
        let last = warning(&v, file, 0, at("2020-01-30T12:00:00Z")).unwrap();
        assert!(last.contains("expires at 2020-01-31T00:00:00Z (in 1 day):"), "{last}");
        let early = warning(&v, file, 0, at("2019-12-31T23:59:59Z")).unwrap();
        assert!(early.contains("is not valid until 2020-01-01T00:00:00Z (is this machine's clock right?)"), "{early}");
        let reversed = Validity { not_before: v.not_after, not_after: v.not_before };
        let said = warning(&reversed, file, 0, at("2020-01-15T00:00:00Z")).unwrap();
        assert!(said.contains("ends before it begins (notAfter 2020-01-01T00:00:00Z is earlier"), "{said}");
    }

    /// The running provider's watch warns of the chain's end as it comes, naming the
    /// certificate of `cert_file` it is (the 2nd: an intermediate), not the provider's
    /// own: renewing the provider's certificate alone leaves the chain ending on the same
    /// day, so the log must say which one to renew.
    #[test]
    fn the_watch_on_the_chain_served_names_the_certificate_that_ends_it() {
        let file = Path::new("/etc/tether/tls/provider.crt");
        let validity = Validity { not_before: at("2020-01-01T00:00:00Z"), not_after: at("2020-01-31T00:00:00Z") };
        let served = Served { file: file.to_owned(), validity, position: 1 };
        assert_eq!(
            served.warning(at("2020-01-21T00:00:01Z")).unwrap(),
            "the 2nd certificate in /etc/tether/tls/provider.crt (a CA's, which the chain served goes through) \
             expires at 2020-01-31T00:00:00Z (in 10 days): TLS consumers refuse it from then on; renew it before \
             then (replace the files and reload)"
        );
        let own = Served { position: 0, ..served };
        assert!(own
            .warning(at("2020-02-01T00:00:00Z"))
            .unwrap()
            .starts_with("the certificate in /etc/tether/tls/provider.crt expired at "));
    }
}
