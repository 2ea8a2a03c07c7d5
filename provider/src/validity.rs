//! When and whether the provider's certificate may be used: its `notBefore` and
//! `notAfter`, and whether it is a CA's, read from the DER of `tls.cert_file`'s first
//! certificate.
//!
//! Why: rustls checks none of it when it loads the server's own certificate, so a
//! provider with an expired one, or with its CA's certificate given as its own, started
//! and reloaded without a word, and every TLS consumer then failed (`certificate
//! expired`, `CaUsedAsEndEntity`) while `write`, which pins the certificate, did not. The
//! provider warns at start, in a reload's reply and from `status` instead, and of a
//! certificate about to expire as well ([`EXPIRY_NOTICE`]). A warning, not a refusal:
//! the file is the operator's to renew, a clock may be wrong, and `write` still works.
//!
//! Only the DER elements in front of what is read are walked (RFC 5280 4.1), so no
//! X.509 parser is needed; a certificate this cannot read gets no warning, and rustls's
//! own checks still apply to it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long before its certificate expires the provider starts saying so: at start, in a
/// reload's reply and from `status`, two weeks ahead, time enough to renew by hand, and
/// so a monitoring job that runs `status` sees it before the consumers are refused. A
/// short-lived certificate renewed by a machine (a day's, from an ACME or step CA) gets
/// a third of its lifetime instead: such renewals run at two thirds, so only one that
/// failed is warned of, not every certificate at every `status`.
pub const EXPIRY_NOTICE: Duration = Duration::from_secs(14 * 86_400);

/// A certificate's validity period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Not valid before this instant.
    pub not_before: SystemTime,
    /// Not valid after this instant.
    pub not_after: SystemTime,
}

impl Validity {
    /// Reads the validity of a DER certificate; `None` if it does not read as one.
    pub fn of(der: &[u8]) -> Option<Self> {
        let (validity, _) = validity_and_rest(der)?;
        let (not_before, rest) = time(validity)?;
        let (not_after, _) = time(rest)?;
        Some(Self { not_before, not_after })
    }

    /// How long before `not_after` the expiry is warned of: [`EXPIRY_NOTICE`], or a third
    /// of a shorter lifetime.
    fn notice(&self) -> Duration {
        let lifetime = self.not_after.duration_since(self.not_before).unwrap_or_default();
        EXPIRY_NOTICE.min(lifetime / 3)
    }

    /// Where the certificate stands at `now`, which decides what is said of it.
    pub fn stage(&self, now: SystemTime) -> Stage {
        if self.not_after < self.not_before {
            Stage::NeverValid
        } else if now > self.not_after {
            Stage::Expired
        } else if self.not_after.duration_since(now).is_ok_and(|left| left < self.notice()) {
            Stage::Expiring
        } else if now < self.not_before {
            Stage::NotYetValid
        } else {
            Stage::Valid
        }
    }

    /// The instants after which [`Validity::stage`] may answer otherwise: the notice's
    /// start, the end and the start of the validity. A watch on the certificate wakes at
    /// these rather than polling.
    pub fn turns(&self) -> [SystemTime; 3] {
        [self.not_after.checked_sub(self.notice()).unwrap_or(self.not_before), self.not_after, self.not_before]
    }

    /// What an operator should hear about using the certificate in `file` at `now`:
    /// that it has expired, expires within [`EXPIRY_NOTICE`], or is not valid yet; `None`
    /// while it is valid for longer.
    pub fn warning(&self, file: &std::path::Path, now: SystemTime) -> Option<String> {
        let at = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
        match self.stage(now) {
            // What `openssl x509 -days -1` makes: "expired" would send the operator to a
            // date that explains nothing, and renewing it the same way changes nothing.
            Stage::NeverValid => Some(format!(
                "the certificate in {} ends before it begins (notAfter {} is earlier than notBefore {}), so it is \
                 never valid: TLS consumers refuse it; issue it again with a validity period that ends after it \
                 begins, then replace the files and reload",
                file.display(),
                at(self.not_after),
                at(self.not_before)
            )),
            Stage::Expired => Some(format!(
                "the certificate in {} expired at {}: TLS consumers refuse it (certificate expired) until it is \
                 renewed (replace the files and reload)",
                file.display(),
                at(self.not_after)
            )),
            Stage::Expiring => {
                let left = self.not_after.duration_since(now).unwrap_or_default();
                let days = left.as_secs().div_ceil(86_400);
                Some(format!(
                    "the certificate in {} expires at {} (in {days} day{}): TLS consumers refuse it from then on; \
                     renew it before then (replace the files and reload)",
                    file.display(),
                    at(self.not_after),
                    if days == 1 { "" } else { "s" }
                ))
            }
            Stage::NotYetValid => Some(format!(
                "the certificate in {} is not valid until {} (is this machine's clock right?): TLS consumers \
                 refuse it until then",
                file.display(),
                at(self.not_before)
            )),
            Stage::Valid => None,
        }
    }
}

/// Where a certificate stands at some instant ([`Validity::stage`]): every stage but
/// `Valid` has a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Valid, and for longer than its notice.
    Valid,
    /// Valid, within its notice of expiry.
    Expiring,
    /// Past its end.
    Expired,
    /// Before its start.
    NotYetValid,
    /// Its end is before its start.
    NeverValid,
}

/// What an operator should hear about serving the DER certificate in `file` as the
/// provider's own: that it is a CA's (its basicConstraints say `cA`), which every TLS
/// consumer refuses as `CaUsedAsEndEntity`; `None` otherwise, or if it does not read.
pub fn ca_warning(der: &[u8], file: &std::path::Path) -> Option<String> {
    is_ca(der)?.then(|| {
        format!(
            "the certificate in {} is a certificate authority's (basicConstraints CA:TRUE), not a server's: TLS \
             consumers refuse it (CaUsedAsEndEntity); give cert_file a certificate the CA issued for this \
             provider's name, then the CA's if it is an intermediate",
            file.display()
        )
    })
}

/// Whether the certificate's basicConstraints extension says `cA` (RFC 5280 4.2.1.9);
/// `Some(false)` without the extension, `None` if it does not read.
fn is_ca(der: &[u8]) -> Option<bool> {
    let (_validity, rest) = validity_and_rest(der)?;
    let (_subject, rest) = element(rest, SEQUENCE)?;
    let (_public_key, mut rest) = element(rest, SEQUENCE)?;
    // issuerUniqueID [1] and subjectUniqueID [2], both optional, before extensions [3].
    for tag in [ISSUER_UID, SUBJECT_UID] {
        if let Some((_, after)) = element(rest, tag) {
            rest = after;
        }
    }
    let Some((extensions, _)) = element(rest, EXTENSIONS) else { return Some(false) };
    let (mut list, _) = element(extensions, SEQUENCE)?;
    while !list.is_empty() {
        let (extension, after) = element(list, SEQUENCE)?;
        list = after;
        let (oid, rest) = element(extension, OID)?;
        if oid != BASIC_CONSTRAINTS {
            continue;
        }
        let rest = element(rest, BOOLEAN).map_or(rest, |(_critical, after)| after);
        let (value, _) = element(rest, OCTET_STRING)?;
        let (constraints, _) = element(value, SEQUENCE)?;
        // cA is DEFAULT FALSE, so absent when false.
        return Some(element(constraints, BOOLEAN).is_some_and(|(ca, _)| ca.iter().any(|&b| b != 0)));
    }
    Some(false)
}

/// The content of the TBS certificate's `validity`, and what follows it there.
fn validity_and_rest(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (certificate, _) = element(der, SEQUENCE)?;
    let (tbs, _) = element(certificate, SEQUENCE)?;
    // An explicit version ([0]) comes first in every certificate but v1's.
    let rest = match element(tbs, VERSION) {
        Some((_, rest)) => rest,
        None => tbs,
    };
    let (_serial, rest) = element(rest, INTEGER)?;
    let (_signature, rest) = element(rest, SEQUENCE)?;
    let (_issuer, rest) = element(rest, SEQUENCE)?;
    element(rest, SEQUENCE)
}

const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const ISSUER_UID: u8 = 0x81;
const SUBJECT_UID: u8 = 0x82;
const EXTENSIONS: u8 = 0xa3;
/// 2.5.29.19, id-ce-basicConstraints, as its DER content.
const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
const INTEGER: u8 = 0x02;
const SEQUENCE: u8 = 0x30;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The content of the DER element at the start of `input` if its tag is `tag`, and what
/// follows it.
fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// A `Time` (UTCTime or GeneralizedTime, in the `Z` form RFC 5280 requires) at the start
/// of `input`, and what follows it.
fn time(input: &[u8]) -> Option<(SystemTime, &[u8])> {
    let (text, rest, year) = if let Some((text, rest)) = element(input, UTC_TIME) {
        // RFC 5280 4.1.2.5.1: two-digit years 50 to 99 are 19xx, the others 20xx.
        let yy = digits(text.get(..2)?)?;
        (text.get(2..)?, rest, if yy >= 50 { 1900 + yy } else { 2000 + yy })
    } else {
        let (text, rest) = element(input, GENERALIZED_TIME)?;
        (text.get(4..)?, rest, digits(text.get(..4)?)?)
    };
    // MMDDHHMMSSZ
    if text.len() != 11 || text[10] != b'Z' {
        return None;
    }
    let field = |i: usize| digits(&text[i..i + 2]);
    let (month, day, hour, minute, second) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + (hour * 3_600 + minute * 60 + second) as i64;
    let t = if seconds >= 0 {
        UNIX_EPOCH + Duration::from_secs(seconds as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs())
    };
    Some((t, rest))
}

fn digits(text: &[u8]) -> Option<u32> {
    text.iter().try_fold(0u32, |acc, &b| b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0')))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard
/// Hinnant's `days_from_civil`).
fn days_from_civil(year: u32, month: u32, day: u32) -> i64 {
    let (y, m, d) = (i64::from(year) - i64::from(month <= 2), i64::from(month), i64::from(day));
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let date = |(y, m, d): (i32, u8, u8)| rcgen::date_time_ymd(y, m, d);
        params.not_before = date(not_before);
        params.not_after = date(not_after);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_ca_s_certificate_is_warned_of_and_a_server_s_is_not() {
        let file = std::path::Path::new("/etc/tether/tls/provider.crt");
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
        // A server's, with basicConstraints CA:FALSE, and one without the extension.
        let mut server = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        server.is_ca = rcgen::IsCa::ExplicitNoCa;
        assert_eq!(ca_warning(server.self_signed(&key).unwrap().der(), file), None);
        assert_eq!(ca_warning(&certificate((2020, 1, 1), (2060, 1, 1)), file), None);
        assert_eq!(is_ca(&certificate((2020, 1, 1), (2060, 1, 1))), Some(false));
        assert_eq!(is_ca(b"not a certificate"), None);
    }

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn the_validity_is_read_from_utc_and_generalized_times() {
        // rcgen writes years before 2050 as UTCTime, later ones as GeneralizedTime.
        let der = certificate((2020, 1, 1), (2060, 2, 29));
        let v = Validity::of(&der).unwrap();
        assert_eq!(v.not_before, at("2020-01-01T00:00:00Z"));
        assert_eq!(v.not_after, at("2060-02-29T00:00:00Z"));
        assert_eq!(Validity::of(b"not a certificate"), None);
        assert_eq!(Validity::of(&der[..40]), None, "cut short");
    }

    #[test]
    fn an_expired_expiring_or_not_yet_valid_certificate_is_warned_of_and_a_valid_one_is_not() {
        let file = std::path::Path::new("/etc/tether/tls/provider.crt");
        let v = Validity::of(&certificate((2020, 1, 1), (2020, 1, 31))).unwrap();
        assert_eq!(v.warning(file, at("2020-01-15T00:00:00Z")), None);
        assert_eq!(
            v.warning(file, at("2026-12-02T00:00:00Z")).unwrap(),
            "the certificate in /etc/tether/tls/provider.crt expired at 2020-01-31T00:00:00Z: TLS consumers refuse \
             it (certificate expired) until it is renewed (replace the files and reload)"
        );
        // A third of its 30 days ahead, and not a second before.
        let soon = v.warning(file, at("2020-01-21T00:00:01Z")).unwrap();
        assert_eq!(
            soon,
            "the certificate in /etc/tether/tls/provider.crt expires at 2020-01-31T00:00:00Z (in 10 days): TLS \
             consumers refuse it from then on; renew it before then (replace the files and reload)"
        );
        assert_eq!(v.warning(file, at("2020-01-21T00:00:00Z")), None, "exactly a third of its lifetime ahead");
        let last = v.warning(file, at("2020-01-30T12:00:00Z")).unwrap();
        assert!(last.contains("expires at 2020-01-31T00:00:00Z (in 1 day):"), "{last}");
        // A year's certificate: two weeks ahead.
        let year = Validity::of(&certificate((2020, 1, 1), (2021, 1, 1))).unwrap();
        assert_eq!(year.warning(file, at("2020-12-18T00:00:00Z")), None);
        let said = year.warning(file, at("2020-12-18T00:00:01Z")).unwrap();
        assert!(said.contains("(in 14 days)"), "{said}");
        let early = v.warning(file, at("2019-12-31T23:59:59Z")).unwrap();
        assert!(early.contains("is not valid until 2020-01-01T00:00:00Z (is this machine's clock right?)"), "{early}");
        // `openssl x509 -days -1`: neither expired nor early, at any time.
        let reversed = Validity::of(&certificate((2020, 1, 31), (2020, 1, 1))).unwrap();
        for now in ["2020-01-15T00:00:00Z", "2026-12-02T00:00:00Z"] {
            let said = reversed.warning(file, at(now)).unwrap();
            assert!(said.contains("ends before it begins (notAfter 2020-01-01T00:00:00Z is earlier"), "{said}");
        }
    }
}
