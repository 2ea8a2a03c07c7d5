//! TLS on the replication port: the rustls server configuration built from `[tls]`, and
//! the client configuration with which `tether-provider write` reaches its own provider.
//!
//! TLS wraps the byte stream below framing: the server runs the TLS handshake on each
//! accepted connection, then the Tether handshake inside it (see `server.rs`). Both
//! configurations are built from the PEM files once, at start and on reload, so a bad
//! file stops the start (or the reload) naming the key, the file and the reason, instead
//! of failing every connection. Crypto is rustls' `ring` provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{self, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::config::{ConfigError, ProviderConfig, TlsConfig};
use crate::validity::Served;
use tether_config::certificate::Validity;

/// The config key of the certificate chain, as errors name it.
pub const CERT_FILE_KEY: &str = "tls.cert_file";
/// The config key of the private key, as errors name it.
pub const KEY_FILE_KEY: &str = "tls.key_file";

/// The config key of the listen address, whose host `write` uses as server name.
pub const LISTEN_KEY: &str = "listen";

/// Why `[tls]` cannot be used. Each error names the key to fix ([`TlsError::key`]).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read (missing, permissions): fix the path or the file.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A file holds text that is not well-formed PEM (a broken section, bad base64).
    #[error("{}: malformed PEM: {}", path.display(), tether_config::shell::pem_problem(source))]
    Pem {
        /// The key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        #[source]
        source: pem::Error,
    },
    /// `tls.cert_file` holds no `CERTIFICATE` section: perhaps the key file was named
    /// instead.
    #[error("{}: no certificate in the file", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// `tls.key_file` holds no private key section (PKCS#8, PKCS#1 or SEC1).
    #[error("{}: no private key in the file", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// `tls.key_file` holds a key encrypted with a passphrase, which a service cannot be
    /// asked for (it read as "no private key in the file", though there is one).
    #[error(
        "{}: the private key is encrypted with a passphrase, which the provider cannot ask for: store it \
         decrypted, readable by the provider alone (openssl pkey -in ENCRYPTED -out PLAIN, then chmod 600 PLAIN)",
        path.display()
    )]
    EncryptedKey {
        /// The file.
        path: PathBuf,
    },
    /// The key parses as PEM but rustls cannot use it (corrupt, unsupported algorithm).
    #[error("{}: unusable private key: {source}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
    /// The key is not the one of the certificate: one of the two files is from another
    /// pair.
    #[error("the key in {} does not match the certificate in {}{hint}", key_path.display(), cert_path.display())]
    KeyMismatch {
        /// The key file.
        key_path: PathBuf,
        /// The certificate file.
        cert_path: PathBuf,
        /// For a file of several certificates, that the first is taken as the
        /// provider's own: a chain written CA first reads as a mismatch.
        hint: &'static str,
    },
    /// The listen host is neither an IP address nor a DNS name, so it cannot be the
    /// server name of a TLS connection.
    #[error("{host:?} cannot be used as a TLS server name: {source}")]
    ServerName {
        /// The host as configured.
        host: String,
        /// What rustls said.
        #[source]
        source: rustls_pki_types::InvalidDnsNameError,
    },
    /// rustls refused the protocol settings; not caused by the files.
    #[error("TLS setup failed: {0}")]
    Setup(#[source] rustls::Error),
}

impl TlsError {
    /// The config key the operator has to look at.
    pub fn key(&self) -> &'static str {
        match self {
            TlsError::Read { key, .. } | TlsError::Pem { key, .. } => key,
            TlsError::NoCertificate { .. } | TlsError::Setup(_) => CERT_FILE_KEY,
            TlsError::NoKey { .. }
            | TlsError::EncryptedKey { .. }
            | TlsError::BadKey { .. }
            | TlsError::KeyMismatch { .. } => KEY_FILE_KEY,
            TlsError::ServerName { .. } => LISTEN_KEY,
        }
    }

    /// As a config error naming `file` and the key.
    pub fn in_config(self, file: &Path) -> ConfigError {
        ConfigError::invalid(file, self.key(), self.to_string())
    }
}

/// The crypto every TLS configuration here uses: rustls' `ring` provider, chosen
/// explicitly so that no process-wide default is needed.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::ring::default_provider())
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    tether_config::read_regular(path).map_err(|source| TlsError::Read { key, path: path.to_owned(), source })
}

/// The certificates of `tls.cert_file`, leaf first; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = read(CERT_FILE_KEY, path)?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { key: CERT_FILE_KEY, path: path.to_owned(), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}

/// The private key of `tls.key_file` (the file's first key).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = read(KEY_FILE_KEY, path)?;
    // PKCS#8's encrypted form, and OpenSSL's older one (a PKCS#1 or SEC1 section with
    // encryption headers).
    let encrypted = |marker: &[u8]| text.windows(marker.len()).any(|w| w == marker);
    if encrypted(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || encrypted(b"Proc-Type: 4,ENCRYPTED") {
        return Err(TlsError::EncryptedKey { path: path.to_owned() });
    }
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey { path: path.to_owned() },
        source => TlsError::Pem { key: KEY_FILE_KEY, path: path.to_owned(), source },
    })
}

/// The server side of `[tls]`: the certificate chain and its key, no client
/// certificates (clients authenticate in the Tether handshake).
pub fn server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs(&tls.cert_file)?;
    let hint = if certs.len() > 1 {
        " (the first certificate of the file is taken as the provider's own: it must come before the rest of its \
         chain)"
    } else {
        ""
    };
    let key = read_key(&tls.key_file)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                TlsError::KeyMismatch { key_path: tls.key_file.clone(), cert_path: tls.cert_file.clone(), hint }
            }
            source => TlsError::BadKey { path: tls.key_file.clone(), source },
        })?;
    Ok(Arc::new(config))
}

/// Whether the provider's own certificate (the first of `tls.cert_file`) has expired, is
/// about to, is not valid yet, or is a CA's, in words ([`crate::validity`]); empty while
/// it can serve for a while yet, or when the file cannot be read (the configuration's
/// errors say why).
pub fn certificate_warnings(tls: &TlsConfig) -> Vec<String> {
    let Some(first) = read_certs(&tls.cert_file).ok().and_then(|certs| certs.into_iter().next()) else {
        return Vec::new();
    };
    let now = std::time::SystemTime::now();
    let dates = Validity::of(first.as_ref()).and_then(|v| crate::validity::warning(&v, &tls.cert_file, 0, now));
    // A CA certificate sent along that ends first ends the chain with it.
    let chain = served(tls)
        .filter(|s| s.position > 0)
        .and_then(|s| crate::validity::warning(&s.validity, &s.file, s.position, now));
    dates.into_iter().chain(chain).chain(crate::validity::ca_warning(first.as_ref(), &tls.cert_file)).collect()
}

/// The chain `tls` serves, as the running provider's watch on its expiry follows it
/// ([`tether_config::certificate_watch`]) and `status` shows its end: the certificate of
/// it that ends first; `None` when the provider's own certificate's dates do not read
/// (nor then are they warned of).
pub fn served(tls: &TlsConfig) -> Option<Served> {
    let certs = read_certs(&tls.cert_file).ok()?;
    let (position, validity) = tether_config::certificate::chain_end(certs.iter().map(|c| c.as_ref()))?;
    Some(Served { file: tls.cert_file.clone(), validity, position })
}

/// What an operator should fix in `[tls]` though it loads: a certificate out of its
/// validity or a CA's ([`certificate_warnings`]), and a private key that group or others may read or
/// write, as a secret file is warned of.
pub fn warnings(tls: &TlsConfig) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut warnings = certificate_warnings(tls);
    if let Ok(meta) = std::fs::metadata(&tls.key_file) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            warnings.push(format!(
                "TLS key file {} is accessible by group or others (mode {mode:o}); restrict it with chmod 600",
                tls.key_file.display()
            ));
        }
    }
    warnings
}

/// The server configuration of `config`'s `[tls]`, `None` for plain TCP; errors name the
/// config file and key.
pub fn server_config_of(config: &ProviderConfig) -> Result<Option<Arc<ServerConfig>>, ConfigError> {
    config.tls.as_ref().map(server_config).transpose().map_err(|e| e.in_config(&config.file))
}

/// How `tether-provider write` reaches its own provider over TLS: it expects exactly
/// the certificate of `tls.cert_file`, and checks the handshake signature against it.
#[derive(Debug, Clone)]
pub struct SelfClient {
    /// The protocol settings, with `PinnedCertificate` as the verifier.
    pub config: Arc<ClientConfig>,
    /// The name sent as SNI (the listen host); the pin, not the name, is verified.
    pub server_name: ServerName<'static>,
    /// The file the pinned certificate came from, for error messages.
    pub pinned_file: PathBuf,
}

/// The client side of `[tls]` for `write`, connecting to `host` (the listen address).
///
/// Why a pin rather than the certificate as a trust root: a certificate signed by a CA
/// cannot serve as its own trust anchor in webpki, and the listen host (`127.0.0.1`
/// when the provider listens on all interfaces) is rarely a name the certificate
/// carries. `write` reads the same config as the provider, so it knows exactly which
/// certificate to expect.
pub fn self_client(tls: &TlsConfig, host: &str) -> Result<SelfClient, TlsError> {
    let pinned = read_certs(&tls.cert_file)?.swap_remove(0);
    let provider = provider();
    let verifier = PinnedCertificate { cert: pinned, algorithms: provider.signature_verification_algorithms };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let server_name = ServerName::try_from(host.to_owned())
        .map_err(|source| TlsError::ServerName { host: host.to_owned(), source })?;
    Ok(SelfClient { config: Arc::new(config), server_name, pinned_file: tls.cert_file.clone() })
}

/// A verifier that accepts exactly one end-entity certificate: the provider's own.
#[derive(Debug)]
struct PinnedCertificate {
    /// The leaf certificate of `tls.cert_file`.
    cert: CertificateDer<'static>,
    /// The algorithms the handshake signature is checked with.
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A certificate and its key, as PEM files in `dir`.
    fn pair(dir: &Path, name: &str) -> TlsConfig {
        let generated = rcgen::generate_simple_self_signed(vec!["provider.test".to_owned()]).unwrap();
        let cert_file = dir.join(format!("{name}.crt"));
        let key_file = dir.join(format!("{name}.key"));
        std::fs::write(&cert_file, generated.cert.pem()).unwrap();
        std::fs::write(&key_file, generated.key_pair.serialize_pem()).unwrap();
        TlsConfig { cert_file, key_file }
    }

    /// The error of `tls`, as the provider reports it at start.
    fn refused(tls: &TlsConfig) -> String {
        let config =
            ProviderConfig::from_toml_str("suffix = \"dc=example,dc=com\"\n", Path::new("/etc/tether/provider.toml"))
                .unwrap();
        let config = ProviderConfig { tls: Some(tls.clone()), ..config };
        match server_config_of(&config) {
            Ok(_) => panic!("accepted {tls:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// A private key group or others may read is warned of, as a secret file is.
    #[test]
    fn a_key_group_or_others_may_read_is_warned_of() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let tls = pair(dir.path(), "provider");
        std::fs::set_permissions(&tls.key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let warned = warnings(&tls);
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(warned[0].contains("(mode 644); restrict it with chmod 600"), "{warned:?}");
        // Readable by its group alone (a key shared with a `ssl-cert` group): still
        // readable by more than the provider.
        std::fs::set_permissions(&tls.key_file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let warned = warnings(&tls);
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(warned[0].contains("is accessible by group or others (mode 640)"), "{warned:?}");
        std::fs::set_permissions(&tls.key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(warnings(&tls).is_empty());
    }

    /// The certificate judged is the provider's own, the first of the file, not the CA's
    /// that follows it in a chain; and a CA's given as the provider's own is warned of,
    /// as docs/operations.md says (the date and CA checks are each unit-tested in
    /// `validity`, but not which certificate of the file they are given).
    #[test]
    fn the_first_certificate_of_the_file_is_the_one_warned_of() {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).unwrap();
        let leaf = |not_after: (i32, u8, u8)| {
            let mut params = rcgen::CertificateParams::new(vec!["provider.test".to_owned()]).unwrap();
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
            params.signed_by(&rcgen::KeyPair::generate().unwrap(), &ca, &ca_key).unwrap().pem()
        };
        let warned = |name: &str, pem: String| {
            let cert_file = dir.path().join(name);
            std::fs::write(&cert_file, pem).unwrap();
            certificate_warnings(&TlsConfig { cert_file, key_file: dir.path().join("unread.key") })
        };
        // A valid server certificate, then its CA's: nothing to fix.
        assert_eq!(warned("chain.crt", leaf((2060, 1, 1)) + &ca.pem()), Vec::<String>::new());
        // An expired one, then its CA's (valid): the expiry is said, and only it.
        let expired = warned("expired.crt", leaf((2020, 1, 31)) + &ca.pem());
        assert_eq!(expired.len(), 1, "{expired:?}");
        assert!(expired[0].contains("expired at 2020-01-31T00:00:00Z"), "{expired:?}");
        // The CA's certificate given as the provider's own.
        let ca_own = warned("ca.crt", ca.pem());
        assert_eq!(ca_own.len(), 1, "{ca_own:?}");
        assert!(
            ca_own[0].contains("is a certificate authority's") && ca_own[0].contains("CaUsedAsEndEntity"),
            "{ca_own:?}"
        );
    }

    /// A CA certificate of the chain that ends before the provider's own ends the chain
    /// with it: consumers check the intermediate's dates as they check the provider's, so
    /// it is warned of, naming its place in the file, and it is the end the watch follows
    /// and `status` shows. The root sent along is not: consumers take theirs from
    /// `ca_file`.
    #[test]
    fn an_intermediate_that_ends_first_ends_the_chain_served() {
        let dir = tempfile::tempdir().unwrap();
        let ca = |name: &str, not_after: (i32, u8, u8)| {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(rcgen::DnType::CommonName, name);
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
            (params, rcgen::KeyPair::generate().unwrap())
        };
        let (root, root_key) = ca("Example Root", (2021, 6, 1));
        let root = root.self_signed(&root_key).unwrap();
        let (intermediate, intermediate_key) = ca("Example Intermediate", (2021, 1, 1));
        let intermediate = intermediate.signed_by(&intermediate_key, &root, &root_key).unwrap();
        let mut own = rcgen::CertificateParams::new(vec!["provider.test".to_owned()]).unwrap();
        own.not_before = rcgen::date_time_ymd(2020, 1, 1);
        own.not_after = rcgen::date_time_ymd(2060, 1, 1);
        let own = own.signed_by(&rcgen::KeyPair::generate().unwrap(), &intermediate, &intermediate_key).unwrap();
        let cert_file = dir.path().join("chain.crt");
        std::fs::write(&cert_file, own.pem() + &intermediate.pem() + &root.pem()).unwrap();
        let tls = TlsConfig { cert_file: cert_file.clone(), key_file: dir.path().join("unread.key") };

        let warned = certificate_warnings(&tls);
        assert_eq!(
            warned,
            [format!(
                "the 2nd certificate in {} (a CA's, which the chain served goes through) expired at \
                 2021-01-01T00:00:00Z: TLS consumers refuse it (certificate expired) until it is renewed (replace \
                 the files and reload)",
                cert_file.display()
            )]
        );
        let chain = served(&tls).unwrap();
        assert_eq!(chain.position, 1);
        assert_eq!(chain.validity.not_after, humantime::parse_rfc3339("2021-01-01T00:00:00Z").unwrap());
        // The root, which ends before the provider's own too, is passed over: without the
        // intermediate the chain ends with the provider's own certificate.
        std::fs::write(&cert_file, own.pem() + &root.pem()).unwrap();
        assert_eq!(certificate_warnings(&tls), Vec::<String>::new());
        assert_eq!(served(&tls).unwrap().position, 0);
    }

    /// `write` takes its provider by the pinned certificate and the handshake signature
    /// made with that certificate's key: whatever took the port can present the
    /// certificate (it is public), but not sign with its key.
    #[tokio::test]
    async fn write_refuses_a_server_presenting_the_pinned_certificate_without_its_key() {
        use rustls::server::{ClientHello, ResolvesServerCert};
        use rustls::sign::CertifiedKey;

        /// Presents the provider's certificate and signs with `key`.
        #[derive(Debug)]
        struct Presenting(Arc<CertifiedKey>);
        impl ResolvesServerCert for Presenting {
            fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
                Some(self.0.clone())
            }
        }

        let dir = tempfile::tempdir().unwrap();
        let own = pair(dir.path(), "provider");
        let other = pair(dir.path(), "other");
        let cert = read_certs(&own.cert_file).unwrap();
        // Whether `write`'s client completes a TLS handshake with a server showing the
        // provider's certificate and signing with the key of `key_file`.
        let handshake = |key_file: &Path| {
            let signer = provider().key_provider.load_private_key(read_key(key_file).unwrap()).unwrap();
            let resolver = Presenting(Arc::new(CertifiedKey::new(cert.clone(), signer)));
            let server = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(resolver));
            let client = self_client(&own, "127.0.0.1").unwrap();
            async move {
                let (client_io, server_io) = tokio::io::duplex(1 << 16);
                let accepting = tokio::spawn(tokio_rustls::TlsAcceptor::from(Arc::new(server)).accept(server_io));
                let connected =
                    tokio_rustls::TlsConnector::from(client.config).connect(client.server_name, client_io).await;
                drop(accepting);
                connected.map(drop)
            }
        };
        handshake(&own.key_file).await.unwrap();
        let refused = handshake(&other.key_file).await;
        assert!(refused.is_err(), "write took a server that showed the certificate without its key");
    }

    #[test]
    fn a_matching_pair_makes_a_server_and_a_self_client() {
        let dir = tempfile::tempdir().unwrap();
        let tls = pair(dir.path(), "provider");
        server_config(&tls).unwrap();
        let client = self_client(&tls, "127.0.0.1").unwrap();
        assert_eq!(client.pinned_file, tls.cert_file);
        assert!(matches!(self_client(&tls, "not a host!"), Err(TlsError::ServerName { .. })));
    }

    #[test]
    fn missing_files_name_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = pair(dir.path(), "provider");
        let missing = dir.path().join("missing.pem");
        let got = refused(&TlsConfig { cert_file: missing.clone(), ..good.clone() });
        let want = format!("/etc/tether/provider.toml: key 'tls.cert_file': cannot read {}: ", missing.display());
        assert!(got.starts_with(&want), "\n got: {got}\nwant: {want}");
        let got = refused(&TlsConfig { key_file: missing.clone(), ..good });
        let want = format!("/etc/tether/provider.toml: key 'tls.key_file': cannot read {}: ", missing.display());
        assert!(got.starts_with(&want), "\n got: {got}\nwant: {want}");
    }

    #[test]
    fn a_file_without_the_expected_section_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let good = pair(dir.path(), "provider");
        // The two files swapped: a key where the certificate belongs and vice versa.
        let got = refused(&TlsConfig { cert_file: good.key_file.clone(), key_file: good.key_file.clone() });
        assert_eq!(
            got,
            format!(
                "/etc/tether/provider.toml: key 'tls.cert_file': {}: no certificate in the file",
                good.key_file.display()
            )
        );
        let got = refused(&TlsConfig { cert_file: good.cert_file.clone(), key_file: good.cert_file.clone() });
        assert_eq!(
            got,
            format!(
                "/etc/tether/provider.toml: key 'tls.key_file': {}: no private key in the file",
                good.cert_file.display()
            )
        );
        let broken = dir.path().join("broken.crt");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n").unwrap();
        let got = refused(&TlsConfig { cert_file: broken.clone(), ..good });
        let want = format!("/etc/tether/provider.toml: key 'tls.cert_file': {}: malformed PEM: ", broken.display());
        assert!(got.starts_with(&want), "\n got: {got}\nwant: {want}");
    }

    #[test]
    fn a_bad_or_foreign_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let good = pair(dir.path(), "provider");
        let other = pair(dir.path(), "other");
        let got = refused(&TlsConfig { key_file: other.key_file.clone(), ..good.clone() });
        assert_eq!(
            got,
            format!(
                "/etc/tether/provider.toml: key 'tls.key_file': the key in {} does not match the certificate in {}",
                other.key_file.display(),
                good.cert_file.display()
            )
        );
        let garbage = dir.path().join("garbage.key");
        std::fs::write(&garbage, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
        let got = refused(&TlsConfig { key_file: garbage.clone(), ..good.clone() });
        let want =
            format!("/etc/tether/provider.toml: key 'tls.key_file': {}: unusable private key: ", garbage.display());
        assert!(got.starts_with(&want), "\n got: {got}\nwant: {want}");

        // A chain written CA first: the mismatch says which certificate is taken.
        let chain = dir.path().join("chain.crt");
        let ca_first =
            std::fs::read_to_string(&other.cert_file).unwrap() + &std::fs::read_to_string(&good.cert_file).unwrap();
        std::fs::write(&chain, ca_first).unwrap();
        let got = refused(&TlsConfig { cert_file: chain, ..good.clone() });
        assert!(
            got.ends_with(
                " (the first certificate of the file is taken as the provider's own: it must come before the rest \
                 of its chain)"
            ),
            "{got}"
        );

        // A key encrypted with a passphrase, in both forms OpenSSL writes.
        for (name, text) in [
            ("pkcs8.key", "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n"),
            (
                "legacy.key",
                "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nMIIB\n\
                 -----END RSA PRIVATE KEY-----\n",
            ),
        ] {
            let encrypted = dir.path().join(name);
            std::fs::write(&encrypted, text).unwrap();
            let got = refused(&TlsConfig { key_file: encrypted.clone(), ..good.clone() });
            assert_eq!(
                got,
                format!(
                    "/etc/tether/provider.toml: key 'tls.key_file': {}: the private key is encrypted with a passphrase, \
                     which the provider cannot ask for: store it decrypted, readable by the provider alone (openssl \
                     pkey -in ENCRYPTED -out PLAIN, then chmod 600 PLAIN)",
                    encrypted.display()
                )
            );
        }
    }
}
