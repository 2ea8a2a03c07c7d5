//! When and whether a certificate may be used: its `notBefore` and `notAfter`, and
//! whether it is a CA's, read from its DER.
//!
//! Why: rustls checks none of it when the provider loads its own certificate, so a
//! provider with an expired one, or with its CA's certificate given as its own, started
//! without a word and every TLS consumer then failed; and a consumer accepts a
//! certificate that expires tomorrow without saying so, although it will refuse it then.
//! Each process words its own warnings (the provider of the file it serves, the consumer
//! of what its provider presented) from the [`Stage`] found here, and
//! [`crate::certificate_watch`] says them again as the stage turns.
//!
//! Only the DER elements in front of what is read are walked (RFC 5280 4.1), so no
//! X.509 parser is needed; a certificate this cannot read gets no warning, and rustls's
//! own checks still apply to it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long before a certificate expires the processes start saying so (the provider of
/// its own at start, in a reload's reply, from `status` and in its log; a consumer of its
/// provider's from `status` and in its log): two weeks ahead, time enough to renew by
/// hand, and so a monitoring job that runs `status` sees it before consumers are refused. A
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
    pub fn notice(&self) -> Duration {
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

    /// Whole days from `now` to the end, a part of one counted as one: "in 1 day" for
    /// the last hours, never "in 0 days".
    pub fn days_left(&self, now: SystemTime) -> u64 {
        self.not_after.duration_since(now).unwrap_or_default().as_secs().div_ceil(86_400)
    }

    /// The instants after which [`Validity::stage`] may answer otherwise: the notice's
    /// start, the end and the start of the validity. A watch on the certificate wakes at
    /// these rather than polling.
    pub fn turns(&self) -> [SystemTime; 3] {
        [self.not_after.checked_sub(self.notice()).unwrap_or(self.not_before), self.not_after, self.not_before]
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

/// Whether the certificate's basicConstraints extension says `cA` (RFC 5280 4.2.1.9);
/// `Some(false)` without the extension, `None` if it does not read.
pub fn is_ca(der: &[u8]) -> Option<bool> {
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
    fn a_ca_s_certificate_reads_as_one_and_a_server_s_does_not() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(vec!["Example CA".to_owned()]).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        assert_eq!(is_ca(ca.self_signed(&key).unwrap().der()), Some(true));
        // A server's, with basicConstraints CA:FALSE, and one without the extension.
        let mut server = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        server.is_ca = rcgen::IsCa::ExplicitNoCa;
        assert_eq!(is_ca(server.self_signed(&key).unwrap().der()), Some(false));
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
    fn the_stage_turns_at_the_notice_the_end_and_the_start() {
        let v = Validity::of(&certificate((2020, 1, 1), (2020, 1, 31))).unwrap();
        assert_eq!(v.stage(at("2020-01-15T00:00:00Z")), Stage::Valid);
        // A third of its 30 days ahead, and not a second before.
        assert_eq!(v.stage(at("2020-01-21T00:00:00Z")), Stage::Valid, "exactly a third of its lifetime ahead");
        assert_eq!(v.stage(at("2020-01-21T00:00:01Z")), Stage::Expiring);
        assert_eq!(v.days_left(at("2020-01-21T00:00:01Z")), 10);
        assert_eq!(v.days_left(at("2020-01-30T12:00:00Z")), 1, "half a day left is said as a day");
        assert_eq!(v.stage(at("2020-01-31T00:00:00Z")), Stage::Expiring, "valid to its last second");
        assert_eq!(v.stage(at("2020-01-31T00:00:01Z")), Stage::Expired);
        assert_eq!(v.stage(at("2019-12-31T23:59:59Z")), Stage::NotYetValid);
        assert_eq!(
            v.turns(),
            [at("2020-01-21T00:00:00Z"), at("2020-01-31T00:00:00Z"), at("2020-01-01T00:00:00Z")],
            "the notice's start, the end, the start"
        );
        // A year's certificate: two weeks ahead.
        let year = Validity::of(&certificate((2020, 1, 1), (2021, 1, 1))).unwrap();
        assert_eq!(year.stage(at("2020-12-18T00:00:00Z")), Stage::Valid);
        assert_eq!(year.stage(at("2020-12-18T00:00:01Z")), Stage::Expiring);
        assert_eq!(year.days_left(at("2020-12-18T00:00:01Z")), 14);
        // `openssl x509 -days -1`: neither expired nor early, at any time.
        let reversed = Validity::of(&certificate((2020, 1, 31), (2020, 1, 1))).unwrap();
        for now in ["2020-01-15T00:00:00Z", "2026-12-02T00:00:00Z"] {
            assert_eq!(reversed.stage(at(now)), Stage::NeverValid);
        }
    }
}
