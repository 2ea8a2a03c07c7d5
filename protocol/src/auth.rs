//! Authentication primitives for the handshake: the shared [`Secret`], the challenge
//! nonce and the HMAC-SHA256 proof. `handshake` drives the exchange; this module only
//! computes and checks. A secret never crosses the wire: the client proves it knows the
//! secret by MACing a fresh nonce the provider chose, bound to who it says it is.
//!
//! MAC construction (normative, see `docs/protocol.md`):
//! `HMAC-SHA256(secret, lp(DOMAIN) ‖ lp(nonce) ‖ lp(client_id) ‖ lp(role kind) ‖ lp(agreement))`
//! where `lp(x)` is `x`'s length as 4 big-endian bytes followed by `x`, the role kind is
//! `consumer` or `writer` and the agreement is empty for a writer. Length prefixes keep
//! the parts from running into each other (`client_id "ab" + agreement "c"` cannot be
//! confused with `"a" + "bc"`), and the role kind keeps an agreement named `writer` from
//! standing in for the writer role.
//!
//! From protocol version 3 the provider proves itself too, after it has checked the
//! client's MAC:
//! `HMAC-SHA256(secret, lp(PROOF_DOMAIN) ‖ lp(nonce) ‖ lp(client nonce) ‖ lp(client_id) ‖
//! lp(role kind) ‖ lp(agreement) ‖ lp(welcome))`, the welcome as its fields in order, each
//! big-endian (version as 2 bytes, history as its 16, then session id, keepalive interval
//! and keepalive timeout as 8 each). Its own domain keeps the two MACs apart: a client's
//! MAC is never a proof, so a peer without the secret that relays a client's `Auth`
//! learns nothing it can answer that client's challenge with, and the welcome inside it
//! keeps what the client is told (history, keepalive) from being swapped in transit.

use std::fmt;

use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::message::{Hello, Welcome, MAC_LEN, NONCE_LEN};

/// Domain separation: a MAC made for this handshake cannot be reused as any other
/// HMAC computed with the same secret, nor across incompatible MAC layouts.
const DOMAIN: &[u8] = b"tether-handshake-mac-v1";

/// Domain separation for the provider's proof (see the module's overview).
const PROOF_DOMAIN: &[u8] = b"tether-provider-proof-v1";

/// The challenge nonce.
pub type Nonce = [u8; NONCE_LEN];

/// The client's proof.
pub type MacTag = [u8; MAC_LEN];

type HmacSha256 = Hmac<Sha256>;

/// Why a secret or a nonce could not be had.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// An empty secret authenticates nothing; refused so a blank `secret_file` is a
    /// clear start-up error rather than an open door.
    #[error("secret is empty")]
    EmptySecret,
    /// The operating system's random generator failed; no nonce, no handshake.
    #[error("random number generator failed: {0}")]
    Random(#[source] rand::Error),
    /// The transcript cannot be MACed (a part over 4 GiB); never happens for a Hello
    /// that fits a frame.
    #[error("handshake transcript cannot be authenticated")]
    Unmacable,
}

/// A shared secret (an agreement's or the writer's). Its bytes are never printed: its
/// `Debug` is `Secret(<redacted>)` and it has no `Display`. Equality (used to notice a
/// changed `secret_file` on reload) compares in constant time.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for Secret {}

impl Secret {
    /// A secret from its exact bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, AuthError> {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Err(AuthError::EmptySecret);
        }
        Ok(Self(bytes))
    }

    /// A secret from the contents of a `secret_file`: one trailing `\n` or `\r\n`, as
    /// editors and `echo` leave, is not part of the secret. Anything else is kept as is.
    pub fn from_file_contents(mut bytes: Vec<u8>) -> Result<Self, AuthError> {
        if bytes.ends_with(b"\r\n") {
            bytes.truncate(bytes.len() - 2);
        } else if bytes.ends_with(b"\n") {
            bytes.truncate(bytes.len() - 1);
        }
        Self::new(bytes)
    }

    /// The secret's bytes, for whoever must MAC with it.
    fn expose(&self) -> &[u8] {
        &self.0
    }
}

/// The secret's bytes do not outlive it in this process's memory: zeroed through
/// `zeroize`, whose writes the compiler may not drop as dead stores before the free (a
/// plain loop's it may), over the whole allocation (a trailing newline cut off by
/// [`Secret::from_file_contents`] lies beyond the length).
impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A fresh 32-byte challenge from the operating system's CSPRNG.
pub fn new_nonce() -> Result<Nonce, AuthError> {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.try_fill_bytes(&mut nonce).map_err(AuthError::Random)?;
    Ok(nonce)
}

/// The HMAC keyed with `secret` over the handshake transcript, before finalizing.
/// `None` only if the HMAC implementation refuses the key, which HMAC never does for a
/// key of any length; callers fail closed on it anyway.
fn keyed(secret: &Secret, nonce: &Nonce, hello: &Hello) -> Option<HmacSha256> {
    let parts: [&[u8]; 5] = [
        DOMAIN,
        nonce,
        hello.client_id.as_bytes(),
        hello.role.kind().as_bytes(),
        hello.role.agreement().unwrap_or_default().as_bytes(),
    ];
    keyed_parts(secret, &parts)
}

/// The HMAC keyed with `secret` over `parts`, each length-prefixed.
fn keyed_parts(secret: &Secret, parts: &[&[u8]]) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(secret.expose()).ok()?;
    for part in parts {
        // A part longer than 4 GiB cannot have arrived in a frame; refuse it rather
        // than MAC an ambiguous length.
        let len = u32::try_from(part.len()).ok()?;
        mac.update(&len.to_be_bytes());
        mac.update(part);
    }
    Some(mac)
}

/// The provider's proof, keyed with `secret`, before finalizing.
fn keyed_proof(secret: &Secret, nonces: Nonces<'_>, hello: &Hello, welcome: &Welcome) -> Option<HmacSha256> {
    let mut told = Vec::with_capacity(2 + 16 + 3 * 8);
    told.extend_from_slice(&welcome.version.to_be_bytes());
    told.extend_from_slice(&welcome.history.0);
    told.extend_from_slice(&welcome.session_id.to_be_bytes());
    told.extend_from_slice(&welcome.keepalive_interval_ms.to_be_bytes());
    told.extend_from_slice(&welcome.keepalive_timeout_ms.to_be_bytes());
    let parts: [&[u8]; 7] = [
        PROOF_DOMAIN,
        nonces.provider,
        nonces.client,
        hello.client_id.as_bytes(),
        hello.role.kind().as_bytes(),
        hello.role.agreement().unwrap_or_default().as_bytes(),
        &told,
    ];
    keyed_parts(secret, &parts)
}

/// The two nonces of a mutual handshake: the provider's challenge and the client's.
#[derive(Debug, Clone, Copy)]
pub struct Nonces<'a> {
    /// The provider's, from `MutualChallenge`.
    pub provider: &'a Nonce,
    /// The client's, from `MutualAuth`.
    pub client: &'a Nonce,
}

/// The provider's proof that it knows `secret`, for the handshake whose nonces, hello
/// and welcome these are.
pub fn compute_proof(
    secret: &Secret,
    nonces: Nonces<'_>,
    hello: &Hello,
    welcome: &Welcome,
) -> Result<MacTag, AuthError> {
    let mac = keyed_proof(secret, nonces, hello, welcome).ok_or(AuthError::Unmacable)?;
    Ok(mac.finalize().into_bytes().into())
}

/// Whether `tag` is the provider's proof for this handshake under `secret`, compared in
/// constant time.
pub fn verify_proof(secret: &Secret, nonces: Nonces<'_>, hello: &Hello, welcome: &Welcome, tag: &MacTag) -> bool {
    keyed_proof(secret, nonces, hello, welcome).is_some_and(|mac| mac.verify_slice(tag).is_ok())
}

/// The client's proof for `nonce` and the identity and role in `hello`.
pub fn compute_mac(secret: &Secret, nonce: &Nonce, hello: &Hello) -> Result<MacTag, AuthError> {
    let mac = keyed(secret, nonce, hello).ok_or(AuthError::Unmacable)?;
    Ok(mac.finalize().into_bytes().into())
}

/// Whether `tag` is the proof for `nonce` and `hello` under `secret`, compared in
/// constant time so timing reveals nothing about the expected MAC.
pub fn verify_mac(secret: &Secret, nonce: &Nonce, hello: &Hello, tag: &MacTag) -> bool {
    keyed(secret, nonce, hello).is_some_and(|mac| mac.verify_slice(tag).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::tests::consumer_hello;
    use crate::message::Role;

    #[test]
    fn debug_never_shows_the_secret() {
        let s = Secret::new("hunter2").unwrap();
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{:?}", Some(&s)), "Some(Secret(<redacted>))");
    }

    #[test]
    fn file_contents_lose_one_trailing_newline_only() {
        assert_eq!(Secret::from_file_contents(b"abc\n".to_vec()).unwrap(), Secret::new("abc").unwrap());
        assert_eq!(Secret::from_file_contents(b"abc\r\n".to_vec()).unwrap(), Secret::new("abc").unwrap());
        assert_eq!(Secret::from_file_contents(b"abc\n\n".to_vec()).unwrap(), Secret::new("abc\n").unwrap());
        assert_eq!(Secret::from_file_contents(b" abc ".to_vec()).unwrap(), Secret::new(" abc ").unwrap());
        assert!(matches!(Secret::from_file_contents(b"\n".to_vec()), Err(AuthError::EmptySecret)));
        assert!(matches!(Secret::new(Vec::new()), Err(AuthError::EmptySecret)));
    }

    /// A reload compares the secret read again with the one held to tell whether it
    /// changed (and revoke the sessions it admitted): a new secret that begins with the
    /// old one, or the old one with a part cut off, is a changed secret.
    #[test]
    fn a_secret_equals_only_one_of_the_same_bytes_and_length() {
        let secret = |s: &str| Secret::new(s).unwrap();
        assert_eq!(secret("hunter2"), secret("hunter2"));
        assert_ne!(secret("hunter2"), secret("hunter2-rotated"));
        assert_ne!(secret("hunter2-rotated"), secret("hunter2"));
        assert_ne!(secret("hunter2"), secret("hunter3"));
    }

    #[test]
    fn nonces_are_fresh() {
        assert_ne!(new_nonce().unwrap(), new_nonce().unwrap());
    }

    #[test]
    fn mac_verifies_only_for_the_same_secret_nonce_and_identity() {
        let secret = Secret::new("s3cret").unwrap();
        let nonce = new_nonce().unwrap();
        let hello = consumer_hello("people");
        let tag = compute_mac(&secret, &nonce, &hello).unwrap();
        assert!(verify_mac(&secret, &nonce, &hello, &tag));

        assert!(!verify_mac(&Secret::new("other").unwrap(), &nonce, &hello, &tag));
        assert!(!verify_mac(&secret, &new_nonce().unwrap(), &hello, &tag));
        let mut other_agreement = hello.clone();
        if let Role::Consumer { agreement, .. } = &mut other_agreement.role {
            *agreement = "groups".into();
        }
        assert!(!verify_mac(&secret, &nonce, &other_agreement, &tag));
        let mut other_client = hello.clone();
        other_client.client_id.push('x');
        assert!(!verify_mac(&secret, &nonce, &other_client, &tag));
        let mut flipped = tag;
        flipped[0] ^= 1;
        assert!(!verify_mac(&secret, &nonce, &hello, &flipped));
    }

    #[test]
    fn a_proof_verifies_only_for_the_same_secret_nonces_identity_and_welcome() {
        let secret = Secret::new("s3cret").unwrap();
        let (provider, client) = (new_nonce().unwrap(), new_nonce().unwrap());
        let nonces = Nonces { provider: &provider, client: &client };
        let hello = consumer_hello("people");
        let welcome = welcome();
        let proof = compute_proof(&secret, nonces, &hello, &welcome).unwrap();
        assert!(verify_proof(&secret, nonces, &hello, &welcome, &proof));

        assert!(!verify_proof(&Secret::new("other").unwrap(), nonces, &hello, &welcome, &proof));
        let swapped = Nonces { provider: &client, client: &provider };
        assert!(!verify_proof(&secret, swapped, &hello, &welcome, &proof));
        let other_welcome = Welcome { history: crate::cookie::HistoryId([6; 16]), ..welcome.clone() };
        assert!(!verify_proof(&secret, nonces, &hello, &other_welcome, &proof));
        let other_client = Hello { client_id: "replica-2".into(), ..hello.clone() };
        assert!(!verify_proof(&secret, nonces, &other_client, &welcome, &proof));
        // The client's MAC over the provider's nonce is never a proof, nor the reverse.
        let mac = compute_mac(&secret, &provider, &hello).unwrap();
        assert_ne!(mac, proof);
        assert!(!verify_proof(&secret, nonces, &hello, &welcome, &mac));
    }

    /// A version 3 welcome, as a provider tells it.
    fn welcome() -> Welcome {
        Welcome {
            version: 3,
            history: crate::cookie::HistoryId([5; 16]),
            session_id: 9,
            keepalive_interval_ms: 5_000,
            keepalive_timeout_ms: 20_000,
        }
    }

    /// `lp(x)` of docs/protocol.md: `x`'s length as 4 big-endian bytes, then `x`.
    fn lp(parts: &[&[u8]]) -> Vec<u8> {
        parts.iter().flat_map(|p| (p.len() as u32).to_be_bytes().into_iter().chain(p.iter().copied())).collect()
    }

    /// The MAC and the proof are normative (docs/protocol.md, "MAC construction" and
    /// "Proof construction"): a peer built from another release, or another
    /// implementation, computes them from the text, so they are checked against the
    /// text here, written out part by part, not against this module's own code.
    #[test]
    fn the_mac_and_the_proof_are_the_documented_constructions() {
        let secret = Secret::new("s3cret").unwrap();
        let (provider, client) = ([7; NONCE_LEN], [9; NONCE_LEN]);
        let hello = consumer_hello("people");
        let hmac = |data: &[u8]| -> MacTag {
            let mut mac = HmacSha256::new_from_slice(b"s3cret").unwrap();
            mac.update(data);
            mac.finalize().into_bytes().into()
        };
        let mac = hmac(&lp(&[b"tether-handshake-mac-v1", &provider, b"replica-1", b"consumer", b"people"]));
        assert_eq!(compute_mac(&secret, &provider, &hello).unwrap(), mac);

        let welcome = Welcome { session_id: 0x0102_0304_0506_0708, ..welcome() };
        let mut told = vec![0, 3];
        told.extend_from_slice(&[5; 16]);
        told.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        told.extend_from_slice(&5_000u64.to_be_bytes());
        told.extend_from_slice(&20_000u64.to_be_bytes());
        let proof =
            hmac(&lp(&[b"tether-provider-proof-v1", &provider, &client, b"replica-1", b"consumer", b"people", &told]));
        let nonces = Nonces { provider: &provider, client: &client };
        assert_eq!(compute_proof(&secret, nonces, &hello, &welcome).unwrap(), proof);
    }

    /// The client's nonce is what keeps a proof recorded from one connection from
    /// answering another (docs/protocol.md): a peer posing as the provider chooses its
    /// own challenge, so it can repeat the one it recorded, but not the client's nonce.
    /// And every field of the welcome is bound, not only the history.
    #[test]
    fn a_proof_binds_the_client_s_nonce_and_every_field_of_the_welcome() {
        let secret = Secret::new("s3cret").unwrap();
        let (provider, client) = (new_nonce().unwrap(), new_nonce().unwrap());
        let nonces = Nonces { provider: &provider, client: &client };
        let hello = consumer_hello("people");
        let welcome = welcome();
        let recorded = compute_proof(&secret, nonces, &hello, &welcome).unwrap();
        let another_connection = new_nonce().unwrap();
        let replayed = Nonces { provider: &provider, client: &another_connection };
        assert!(!verify_proof(&secret, replayed, &hello, &welcome, &recorded), "a recorded proof replayed");
        for (field, told) in [
            ("version", Welcome { version: 4, ..welcome.clone() }),
            ("session_id", Welcome { session_id: 10, ..welcome.clone() }),
            ("keepalive_interval_ms", Welcome { keepalive_interval_ms: 5_001, ..welcome.clone() }),
            ("keepalive_timeout_ms", Welcome { keepalive_timeout_ms: 20_001, ..welcome.clone() }),
        ] {
            assert!(!verify_proof(&secret, nonces, &hello, &told, &recorded), "a welcome with another {field}");
        }
    }

    /// A MAC or a proof is checked in all its 32 bytes: one right in its first half and
    /// wrong only in its last byte is refused.
    #[test]
    fn a_mac_or_a_proof_wrong_only_in_its_last_byte_is_refused() {
        let secret = Secret::new("s3cret").unwrap();
        let (provider, client) = (new_nonce().unwrap(), new_nonce().unwrap());
        let nonces = Nonces { provider: &provider, client: &client };
        let hello = consumer_hello("people");
        let welcome = welcome();
        let mut mac = compute_mac(&secret, &provider, &hello).unwrap();
        mac[MAC_LEN - 1] ^= 1;
        assert!(!verify_mac(&secret, &provider, &hello, &mac));
        let mut proof = compute_proof(&secret, nonces, &hello, &welcome).unwrap();
        proof[MAC_LEN - 1] ^= 1;
        assert!(!verify_proof(&secret, nonces, &hello, &welcome, &proof));
    }

    #[test]
    fn an_agreement_named_writer_is_not_the_writer_role() {
        let secret = Secret::new("s").unwrap();
        let nonce = [1; NONCE_LEN];
        let mut consumer = consumer_hello("writer");
        consumer.client_id = "c".into();
        let writer = Hello { role: Role::Writer, ..consumer.clone() };
        assert_ne!(compute_mac(&secret, &nonce, &consumer).unwrap(), compute_mac(&secret, &nonce, &writer).unwrap());
    }

    #[test]
    fn parts_cannot_run_into_each_other() {
        let secret = Secret::new("s").unwrap();
        let nonce = [1; NONCE_LEN];
        let mut a = consumer_hello("c");
        a.client_id = "ab".into();
        let mut b = consumer_hello("bc");
        b.client_id = "a".into();
        assert_ne!(compute_mac(&secret, &nonce, &a).unwrap(), compute_mac(&secret, &nonce, &b).unwrap());
    }
}
