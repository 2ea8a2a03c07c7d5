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

/// Of a chain as a server sends it (its own certificate first, then the CA certificates
/// up towards a root), the one whose end decides when a client stops accepting it: the
/// one that ends first, with its place in the chain (0 for the server's own). A
/// self-issued certificate after the first (a root appended to the file) is left out:
/// a verifier takes its roots from its own trust store, not from what the server sends,
/// so a root's end in the chain refuses nothing. An intermediate's does: the path to the
/// root goes through it, and a verifier checks its dates as it checks the server's own,
/// so a renewed server certificate under an intermediate about to end still fails on
/// that day. Certificates whose dates do not read are left out; `None` if the first's
/// do not.
pub fn chain_end<'a>(chain: impl IntoIterator<Item = &'a [u8]>) -> Option<(usize, Validity)> {
    let mut chain = chain.into_iter();
    let mut end = (0, Validity::of(chain.next()?)?);
    for (i, der) in chain.enumerate() {
        let Some(v) = Validity::of(der).filter(|_| is_self_issued(der) == Some(false)) else { continue };
        if v.not_after < end.1.not_after {
            end = (i + 1, v);
        }
    }
    Some(end)
}

/// A certificate's place in a chain or file for people, counted from 1: "2nd", "3rd",
/// "11th", "21st".
pub fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// Whether the certificate's issuer and subject are the same name (RFC 5280 6.1: a
/// self-issued certificate, as every root is); `None` if it does not read.
pub fn is_self_issued(der: &[u8]) -> Option<bool> {
    let (certificate, _) = element(der, SEQUENCE)?;
    let (tbs, _) = element(certificate, SEQUENCE)?;
    let rest = element(tbs, VERSION).map_or(tbs, |(_, rest)| rest);
    let (_serial, rest) = element(rest, INTEGER)?;
    let (_signature, rest) = element(rest, SEQUENCE)?;
    let (issuer, rest) = element(rest, SEQUENCE)?;
    let (_validity, rest) = element(rest, SEQUENCE)?;
    let (subject, _) = element(rest, SEQUENCE)?;
    Some(issuer == subject)
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

    /// A CA whose certificate ends at `not_after`, and a certificate it issues for
    /// `localhost` ending at `leaf_after`, as DER.
    fn issued(not_after: (i32, u8, u8), leaf_after: (i32, u8, u8)) -> (Vec<u8>, Vec<u8>) {
        let date = |(y, m, d): (i32, u8, u8)| rcgen::date_time_ymd(y, m, d);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::new()).unwrap();
        ca.distinguished_name.push(rcgen::DnType::CommonName, "Example Intermediate CA");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.not_after = date(not_after);
        let ca = ca.self_signed(&key).unwrap();
        let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        leaf.not_after = date(leaf_after);
        let leaf = leaf.signed_by(&rcgen::KeyPair::generate().unwrap(), &ca, &key).unwrap();
        (ca.der().to_vec(), leaf.der().to_vec())
    }

    /// The chain's end is the server's own certificate's, unless a CA certificate sent
    /// after it ends first; a root (self-issued) sent along never decides it, and a
    /// certificate that does not read is passed over.
    #[test]
    fn a_chain_ends_with_the_first_of_its_certificates_to_end_roots_aside() {
        let (ca, leaf) = issued((2031, 1, 1), (2030, 1, 1));
        let end = |chain: &[&[u8]]| chain_end(chain.iter().copied()).map(|(i, v)| (i, v.not_after));
        assert_eq!(end(&[&leaf]), Some((0, at("2030-01-01T00:00:00Z"))));
        assert_eq!(end(&[&leaf, &ca]), Some((0, at("2030-01-01T00:00:00Z"))), "the CA's ends later");
        assert_eq!(is_self_issued(&ca), Some(true), "made as a root");
        assert_eq!(is_self_issued(&leaf), Some(false));
        assert_eq!(is_self_issued(b"not a certificate"), None);

        // An intermediate: issued by another CA, ending before the server's own.
        let (_, intermediate) = issued((2040, 1, 1), (2029, 6, 1));
        assert_eq!(end(&[&leaf, &intermediate]), Some((1, at("2029-06-01T00:00:00Z"))));
        assert_eq!(end(&[&leaf, b"junk", &intermediate]), Some((2, at("2029-06-01T00:00:00Z"))));
        // A root that ends first is the verifier's business, not the chain's.
        let (old_root, _) = issued((2028, 1, 1), (2027, 1, 1));
        assert_eq!(end(&[&leaf, &old_root]), Some((0, at("2030-01-01T00:00:00Z"))));
        assert_eq!(end(&[b"junk", &leaf]), None, "the server's own must read");
    }

    /// A CA certificate that ends at the same second as the server's own does not end the
    /// chain before it: "ends first" is strict, so the warning names the server's own
    /// certificate, the one its operator renews first, and only a CA certificate that
    /// truly ends earlier is named instead; of two CA certificates that end together, the
    /// first in the chain is, so the place named does not depend on the file's tail.
    #[test]
    fn a_ca_certificate_ending_with_the_server_s_own_leaves_the_end_to_the_server_s_own() {
        let (_, leaf) = issued((2031, 1, 1), (2030, 1, 1));
        let (_, same_end) = issued((2040, 1, 1), (2030, 1, 1));
        let (_, earlier) = issued((2040, 1, 1), (2029, 1, 1));
        let (_, as_early) = issued((2040, 1, 1), (2029, 1, 1));
        let end = |chain: &[&[u8]]| chain_end(chain.iter().copied()).map(|(i, v)| (i, v.not_after));
        assert_eq!(end(&[&leaf, &same_end]), Some((0, at("2030-01-01T00:00:00Z"))), "a tie is the server's own");
        assert_eq!(end(&[&leaf, &earlier, &as_early]), Some((1, at("2029-01-01T00:00:00Z"))), "the first of a tie");
    }

    /// An intermediate is a CA's certificate, and not self-issued: it is one of those
    /// whose end can end the chain, as a verifier checks its dates on the way to its root.
    /// Only self-issued certificates (roots) are passed over, not every CA's.
    #[test]
    fn an_intermediate_ca_certificate_that_ends_first_ends_the_chain() {
        let date = |(y, m, d): (i32, u8, u8)| rcgen::date_time_ymd(y, m, d);
        let ca = |name: &str, not_after: (i32, u8, u8)| {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(rcgen::DnType::CommonName, name);
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.not_after = date(not_after);
            (params, rcgen::KeyPair::generate().unwrap())
        };
        let (root, root_key) = ca("Example Root", (2040, 1, 1));
        let root = root.self_signed(&root_key).unwrap();
        let (intermediate, intermediate_key) = ca("Example Intermediate", (2029, 6, 1));
        let intermediate = intermediate.signed_by(&intermediate_key, &root, &root_key).unwrap();
        let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        leaf.not_after = date((2030, 1, 1));
        let leaf = leaf.signed_by(&rcgen::KeyPair::generate().unwrap(), &intermediate, &intermediate_key).unwrap();
        assert_eq!((is_ca(intermediate.der()), is_self_issued(intermediate.der())), (Some(true), Some(false)));
        let chain = [leaf.der().as_ref(), intermediate.der().as_ref(), root.der().as_ref()];
        let end = chain_end(chain).map(|(i, v)| (i, v.not_after));
        assert_eq!(end, Some((1, at("2029-06-01T00:00:00Z"))));
    }

    #[test]
    fn ordinals_read_as_english() {
        let words: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111].map(ordinal).into();
        assert_eq!(words, ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th"]);
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
