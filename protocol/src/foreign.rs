//! Naming a peer that does not speak Tether at all: a consumer pointed at a web server
//! or an LDAP server, `ldapsearch` or `curl` pointed at a provider, TLS on one side
//! only. Without this the operator reads "frame of 1195725856 bytes exceeds the limit",
//! which is true and useless; the four bytes the frame reader took for a length are
//! the peer's first words, and usually say who it is.
//!
//! Only a handshake's first frame is judged this way ([`crate::handshake`]): later, an
//! oversize frame from a peer that already spoke Tether is that peer's fault, not a
//! stranger's.

use std::fmt;

use crate::frame::MAX_FRAME;

/// The first four bytes a peer sent, when they cannot be the length of a Tether frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForeignPeer {
    /// The bytes, in the order they arrived.
    prefix: [u8; 4],
}

/// What a foreign peer's first bytes look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignKind {
    /// A TLS record: the peer runs TLS and we do not (or the reverse, answered by an alert).
    Tls,
    /// An HTTP request or response, or an HTML page.
    Http,
    /// An LDAP message (a BER SEQUENCE): an LDAP client or server.
    Ldap,
    /// An SSH banner.
    Ssh,
}

impl ForeignKind {
    /// How the kind reads in a message.
    pub fn as_str(self) -> &'static str {
        match self {
            ForeignKind::Tls => "TLS",
            ForeignKind::Http => "HTTP",
            ForeignKind::Ldap => "LDAP",
            ForeignKind::Ssh => "SSH",
        }
    }
}

impl ForeignPeer {
    /// The peer behind a first frame announced as `len` bytes, if no Tether peer could
    /// have sent it: every Tether process refuses to send a frame over [`MAX_FRAME`],
    /// while text, TLS and BER all start with a byte that makes the length far larger.
    pub fn from_first_frame_len(len: usize) -> Option<Self> {
        if len <= MAX_FRAME {
            return None;
        }
        let len = u32::try_from(len).ok()?;
        Some(Self { prefix: len.to_be_bytes() })
    }

    /// What the first bytes look like, when they are recognizable.
    pub fn kind(&self) -> Option<ForeignKind> {
        let p = &self.prefix;
        let text = |words: &[&[u8; 4]]| words.iter().any(|w| p.eq_ignore_ascii_case(&w[..]));
        if (20..=24).contains(&p[0]) && p[1] == 3 && p[2] <= 4 {
            // content type (change_cipher_spec .. heartbeat), protocol version 3.x
            Some(ForeignKind::Tls)
        } else if text(&[b"HTTP", b"GET ", b"POST", b"HEAD", b"PUT ", b"<!DO", b"<htm", b"OPTI", b"DELE", b"CONN"]) {
            Some(ForeignKind::Http)
        } else if p == b"SSH-" {
            Some(ForeignKind::Ssh)
        } else if p[0] == 0x30 {
            Some(ForeignKind::Ldap)
        } else {
            None
        }
    }

    /// The first bytes as they would be written in a Rust string: text as text, the
    /// rest escaped, so a log line shows `"GET "` or `"\x16\x03\x01\x02"`.
    fn shown(&self) -> String {
        self.prefix.escape_ascii().to_string()
    }
}

impl fmt::Display for ForeignPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the peer does not speak the Tether protocol: its first bytes are \"{}\"", self.shown())?;
        if let Some(kind) = self.kind() {
            write!(f, " ({})", kind.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(bytes: &[u8; 4]) -> ForeignPeer {
        let len = usize::try_from(u32::from_be_bytes(*bytes)).expect("fits");
        ForeignPeer::from_first_frame_len(len).expect("foreign")
    }

    #[test]
    fn a_length_a_tether_peer_could_send_is_not_foreign() {
        assert_eq!(ForeignPeer::from_first_frame_len(70_000), None);
        assert_eq!(ForeignPeer::from_first_frame_len(MAX_FRAME), None);
        assert!(ForeignPeer::from_first_frame_len(MAX_FRAME + 1).is_some());
    }

    #[test]
    fn the_usual_strangers_are_named() {
        assert_eq!(peer(b"GET ").kind(), Some(ForeignKind::Http));
        assert_eq!(peer(b"HTTP").kind(), Some(ForeignKind::Http));
        assert_eq!(peer(b"<!DO").kind(), Some(ForeignKind::Http));
        assert_eq!(peer(b"SSH-").kind(), Some(ForeignKind::Ssh));
        // a TLS 1.2 ClientHello record, and an alert record
        assert_eq!(peer(&[0x16, 0x03, 0x01, 0x02]).kind(), Some(ForeignKind::Tls));
        assert_eq!(peer(&[0x15, 0x03, 0x03, 0x00]).kind(), Some(ForeignKind::Tls));
        // an LDAP bind request: SEQUENCE, length, INTEGER message id
        assert_eq!(peer(&[0x30, 0x0c, 0x02, 0x01]).kind(), Some(ForeignKind::Ldap));
        assert_eq!(peer(b"xyzw").kind(), None);
    }

    /// A page is HTML in either case: `<!doctype html>` is how most pages begin now,
    /// and a server that sends a page without a status line is still a web server.
    #[test]
    fn http_and_html_are_named_in_either_case() {
        for first in [b"<!do", b"<!DO", b"<HTM", b"<htm", b"Http"] {
            assert_eq!(peer(first).kind(), Some(ForeignKind::Http), "{}", first.escape_ascii());
        }
    }

    #[test]
    fn the_message_shows_the_bytes_and_the_guess() {
        assert_eq!(
            peer(b"GET ").to_string(),
            "the peer does not speak the Tether protocol: its first bytes are \"GET \" (HTTP)"
        );
        assert_eq!(
            peer(&[0x16, 0x03, 0x01, 0x02]).to_string(),
            "the peer does not speak the Tether protocol: its first bytes are \"\\x16\\x03\\x01\\x02\" (TLS)"
        );
        assert_eq!(
            peer(b"xyzw").to_string(),
            "the peer does not speak the Tether protocol: its first bytes are \"xyzw\""
        );
    }
}
