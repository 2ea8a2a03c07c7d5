//! Certificates generated on the spot for runs over TLS: a CA, and a provider
//! certificate it signs. No key is committed; each test or chaos run makes its own.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

/// A certificate authority generated for one run.
pub struct Ca {
    /// Its self-signed certificate.
    cert: Certificate,
    /// Its key, to sign the provider's certificate.
    key: KeyPair,
}

impl std::fmt::Debug for Ca {
    /// Names the CA; its key stays out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("subject", &self.cert.params().distinguished_name).finish_non_exhaustive()
    }
}

impl Ca {
    /// A new CA whose certificate is named `name`.
    pub fn new(name: &str) -> Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ok(Self { cert: params.self_signed(&key)?, key })
    }

    /// Writes the CA certificate to `path` (what a consumer's `ca_file` names).
    pub fn write(&self, path: &Path) -> Result<PathBuf> {
        std::fs::write(path, self.cert.pem()).with_context(|| format!("writing {}", path.display()))?;
        Ok(path.to_owned())
    }

    /// Issues a server certificate for `names` (DNS names or IP addresses) and writes it
    /// and its key under `dir`; returns the body of the provider's `[tls]` section.
    pub fn issue(&self, dir: &Path, names: &[&str]) -> Result<String> {
        self.issue_valid(dir, names, None)
    }

    /// [`Ca::issue`], valid from and until the instants given (to the second, as X.509
    /// writes them), or for rcgen's default span (1975 to 4096) with `None`.
    pub fn issue_valid(&self, dir: &Path, names: &[&str], valid: Option<(SystemTime, SystemTime)>) -> Result<String> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        if let Some((not_before, not_after)) = valid {
            let at = |t: SystemTime| -> Result<_> {
                Ok(rcgen::date_time_ymd(1970, 1, 1) + t.duration_since(UNIX_EPOCH).context("a time before 1970")?)
            };
            params.not_before = at(not_before)?;
            params.not_after = at(not_after)?;
        }
        params.distinguished_name.push(DnType::CommonName, "tether provider");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        let (cert_file, key_file) = (dir.join("provider.crt"), dir.join("provider.key"));
        std::fs::write(&cert_file, cert.pem()).with_context(|| format!("writing {}", cert_file.display()))?;
        std::fs::write(&key_file, key.serialize_pem()).with_context(|| format!("writing {}", key_file.display()))?;
        // As an operator keeps a key: the provider warns of one others may read.
        std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        Ok(format!("cert_file = \"{}\"\nkey_file = \"{}\"\n", cert_file.display(), key_file.display()))
    }
}

/// A CA under `dir` and a provider certificate for 127.0.0.1 it signed: the provider's
/// `[tls]` section body and a consumer agreement's `[agreement.tls]` body trusting it.
pub fn loopback(dir: &Path) -> Result<(String, String)> {
    let ca = Ca::new("Tether test CA")?;
    let provider = ca.issue(dir, &["127.0.0.1"])?;
    let ca_file = ca.write(&dir.join("ca.pem"))?;
    Ok((provider, format!("ca_file = \"{}\"\n", ca_file.display())))
}
