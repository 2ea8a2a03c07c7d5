//! TLS towards the provider: an agreement's `[agreement.tls]` as a rustls client
//! configuration (the CAs of `ca_file`, the name the provider's certificate must carry),
//! and the client handshake that wraps a connected TCP stream before the Tether
//! handshake runs inside it.
//!
//! The configuration is built once, when the agreement starts (at process start and on
//! reload), so a bad CA file stops the start naming the key, the file and the reason;
//! each session then only runs the handshake. Crypto is rustls' `ring` provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::{self, CryptoProvider};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, InvalidDnsNameError, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::config::AgreementTls;

/// The agreement key of the CA file, as errors name it.
pub const CA_FILE_KEY: &str = "tls.ca_file";
/// The agreement key of the server name, as errors name it.
pub const SERVER_NAME_KEY: &str = "tls.server_name";

/// Why `[agreement.tls]` cannot be used. Each error names the key to fix
/// ([`TlsError::key`]); none is cured by retrying.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `ca_file` could not be read (missing, permissions).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// `ca_file` is not well-formed PEM (a broken section, bad base64).
    #[error("{}: malformed PEM: {}", path.display(), tether_config::shell::pem_problem(source))]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        #[source]
        source: pem::Error,
    },
    /// `ca_file` holds no `CERTIFICATE` section, so nothing would be trusted.
    #[error("{}: no certificate in the file", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A certificate in `ca_file` cannot serve as a trust anchor (not valid X.509).
    #[error("{}: unusable CA certificate: {source}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
    /// The server name is neither a DNS name nor an IP address.
    #[error("{name:?} is not a valid server name: {source}")]
    ServerName {
        /// The name as configured (or the provider's host).
        name: String,
        /// What rustls said.
        #[source]
        source: InvalidDnsNameError,
    },
    /// rustls refused the protocol settings; not caused by the files.
    #[error("TLS setup failed: {0}")]
    Setup(#[source] rustls::Error),
}

impl TlsError {
    /// The agreement key the operator has to look at (relative to `agreement[N]`).
    pub fn key(&self) -> &'static str {
        match self {
            TlsError::ServerName { .. } => SERVER_NAME_KEY,
            _ => CA_FILE_KEY,
        }
    }
}

/// An agreement's TLS settings, ready for each session's handshake.
#[derive(Debug, Clone)]
pub struct TlsClient {
    /// Trusted CAs and protocol settings, shared by every session of the agreement.
    config: Arc<ClientConfig>,
    /// The CA certificates `config` trusts, as read from `ca_file`: a reload compares
    /// them, since a renewed CA keeps its file name.
    cas: Vec<CertificateDer<'static>>,
    /// The name the provider's certificate must carry, also sent as SNI.
    server_name: ServerName<'static>,
}

impl TlsClient {
    /// Reads the CAs of `tls.ca_file`; the provider's certificate must be valid for
    /// `server_name` (see `AgreementConfig::tls_server_name`).
    pub fn new(tls: &AgreementTls, server_name: &str) -> Result<Self, TlsError> {
        let cas = read_cas(&tls.ca_file)?;
        let mut roots = RootCertStore::empty();
        for cert in &cas {
            roots.add(cert.clone()).map_err(|source| TlsError::BadCertificate { path: tls.ca_file.clone(), source })?;
        }
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|source| TlsError::ServerName { name: server_name.to_owned(), source })?;
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Setup)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self { config: Arc::new(config), cas, server_name })
    }

    /// Whether `other` trusts the same CAs for the same name.
    pub fn same_trust(&self, other: &TlsClient) -> bool {
        self.cas == other.cas && self.server_name == other.server_name
    }

    /// Runs the client handshake on a connected stream. An error means no TLS session:
    /// the provider's certificate was refused, or the provider does not speak TLS.
    /// No deadline here: the caller bounds it.
    pub async fn handshake(&self, stream: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        tokio_rustls::TlsConnector::from(self.config.clone()).connect(self.server_name.clone(), stream).await
    }
}

/// Why a handshake failed, for status and logs: rustls' words, plus a hint when the
/// provider evidently does not speak TLS at all (its bytes are not TLS records). A
/// connection closed mid-handshake (a provider stopping, a proxy whose upstream is
/// down) is said in words, as the plain handshake says it, not as rustls' "tls
/// handshake eof".
pub fn describe_failure(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        return "the provider closed the connection during the TLS handshake".to_owned();
    }
    if tether_config::shell::answered_in_plain_tcp(e) {
        return format!("{e} (the provider does not seem to serve TLS: is [tls] set on its side?)");
    }
    // rustls gives a certificate's validity in seconds since 1970; the provider's own
    // warning of it gives dates, and an operator compares the two.
    use rustls::{CertificateError, Error};
    let date = |t: &rustls::pki_types::UnixTime| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.as_secs()))
    };
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::InvalidCertificate(CertificateError::ExpiredContext { time, not_after })) => {
            format!("invalid peer certificate: expired at {} (the time here is {})", date(not_after), date(time))
        }
        Some(Error::InvalidCertificate(CertificateError::NotValidYetContext { time, not_before })) => {
            format!("invalid peer certificate: not valid before {} (the time here is {})", date(not_before), date(time))
        }
        // webpki's word for a certificate whose notAfter precedes its notBefore (what
        // `openssl x509 -days -1` makes): rustls says only "Expired", which sends an
        // operator to compare dates that would not explain it.
        Some(Error::InvalidCertificate(CertificateError::Expired)) => {
            "invalid peer certificate: it ends before it begins (its notAfter is earlier than its notBefore), \
             so it was never valid: issue it again"
                .to_owned()
        }
        _ => e.to_string(),
    }
}

/// The crypto every TLS configuration here uses: rustls' `ring` provider, chosen
/// explicitly so that no process-wide default is needed.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::ring::default_provider())
}

/// Every certificate of `path` as a trust anchor; at least one.
fn read_cas(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = tether_config::read_regular(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { path: path.to_owned(), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A certificate's validity is said in dates, as the provider's warning says it.
    #[test]
    fn an_expired_certificate_is_described_with_dates() {
        use rustls::pki_types::UnixTime;
        let wrap = |e: rustls::CertificateError| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::InvalidCertificate(e))
        };
        let (now, end) = (
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_796_287_895)),
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_580_428_800)),
        );
        let expired = wrap(rustls::CertificateError::ExpiredContext { time: now, not_after: end });
        assert_eq!(
            describe_failure(&expired),
            "invalid peer certificate: expired at 2020-01-31T00:00:00Z (the time here is 2026-12-03T08:51:35Z)"
        );
        let early = wrap(rustls::CertificateError::NotValidYetContext { time: end, not_before: now });
        assert_eq!(
            describe_failure(&early),
            "invalid peer certificate: not valid before 2026-12-03T08:51:35Z (the time here is 2020-01-31T00:00:00Z)"
        );
        let reversed = wrap(rustls::CertificateError::Expired);
        assert!(describe_failure(&reversed).contains("ends before it begins"), "{}", describe_failure(&reversed));
    }

    fn tls(ca_file: &Path) -> AgreementTls {
        AgreementTls { ca_file: ca_file.to_owned(), server_name: None }
    }

    fn error(ca_file: &Path, server_name: &str) -> TlsError {
        match TlsClient::new(&tls(ca_file), server_name) {
            Ok(client) => panic!("accepted: {client:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_ca_file_and_a_name_make_a_client() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()]).unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.cert.pem()).unwrap();
        TlsClient::new(&tls(&path), "provider.example.com").unwrap();
        TlsClient::new(&tls(&path), "127.0.0.1").unwrap();
    }

    /// A renewed CA keeps its file name: `reload` compares what the file holds.
    #[test]
    fn a_renewed_ca_in_the_same_file_is_another_trust() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        let issue = || rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()]).unwrap().cert.pem();
        std::fs::write(&path, issue()).unwrap();
        let before = TlsClient::new(&tls(&path), "provider.test").unwrap();
        assert!(before.same_trust(&TlsClient::new(&tls(&path), "provider.test").unwrap()));
        assert!(!before.same_trust(&TlsClient::new(&tls(&path), "other.test").unwrap()));
        std::fs::write(&path, issue()).unwrap();
        assert!(!before.same_trust(&TlsClient::new(&tls(&path), "provider.test").unwrap()));
    }

    #[test]
    fn a_provider_answering_without_tls_is_named_as_such() {
        let corrupt = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        );
        assert!(describe_failure(&corrupt).contains("does not seem to serve TLS"), "{}", describe_failure(&corrupt));
        let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "tls handshake eof");
        assert_eq!(describe_failure(&eof), "the provider closed the connection during the TLS handshake");
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(describe_failure(&reset), reset.to_string());
    }

    #[test]
    fn bad_ca_files_and_names_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = error(&missing, "x");
        assert_eq!(e.key(), CA_FILE_KEY);
        assert!(e.to_string().starts_with(&format!("cannot read {}: ", missing.display())), "{e}");

        let key_only = dir.path().join("key.pem");
        let pair = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&key_only, pair.serialize_pem()).unwrap();
        let e = error(&key_only, "x");
        assert_eq!(
            (e.key(), e.to_string()),
            (CA_FILE_KEY, format!("{}: no certificate in the file", key_only.display()))
        );

        let broken = dir.path().join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n").unwrap();
        let e = error(&broken, "x");
        assert!(e.to_string().starts_with(&format!("{}: malformed PEM", broken.display())), "{e}");
        // A file cut short (a renewal copied halfway) is said in words, not as bytes.
        let cut = dir.path().join("cut.pem");
        std::fs::write(&cut, "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ").unwrap();
        assert_eq!(
            error(&cut, "x").to_string(),
            format!(
                "{}: malformed PEM: the CERTIFICATE section has no line -----END CERTIFICATE-----: is the file cut \
                 short?",
                cut.display()
            )
        );

        let not_x509 = dir.path().join("not-x509.pem");
        std::fs::write(&not_x509, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        let e = error(&not_x509, "x");
        assert!(e.to_string().starts_with(&format!("{}: unusable CA certificate", not_x509.display())), "{e}");

        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()]).unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, ca.cert.pem()).unwrap();
        let e = error(&good, "not a name!");
        assert_eq!(e.key(), SERVER_NAME_KEY);
        assert!(e.to_string().starts_with("\"not a name!\" is not a valid server name"), "{e}");
    }
}
