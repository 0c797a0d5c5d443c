//! The self-signed serving certificate `kca serve` makes for localhost when given none.

use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::keyring::write_private_file;
use crate::pki::{KeyAlgorithm, SigningKeyPair, fingerprint_sha256, keys::private_key_pem};

/// The development certificate and key in `<data dir>/tls/`, made on first use; with its
/// SHA-256 fingerprint for the log.
pub fn ensure(data_dir: &Path) -> std::io::Result<(PathBuf, PathBuf, String)> {
    let dir = data_dir.join("tls");
    let cert_path = dir.join("dev-cert.pem");
    let key_path = dir.join("dev-key.pem");
    if !(cert_path.exists() && key_path.exists()) {
        let _ = std::fs::remove_file(&cert_path);
        let _ = std::fs::remove_file(&key_path);
        let (cert_pem, key_pem) = generate().map_err(std::io::Error::other)?;
        write_private_file(&key_path, key_pem.as_bytes())?;
        std::fs::write(&cert_path, cert_pem)?;
    }
    let pem = std::fs::read(&cert_path)?;
    let der = pem::parse(&pem).map_err(std::io::Error::other)?.into_contents();
    Ok((cert_path, key_path, fingerprint_sha256(&der)))
}

fn generate() -> Result<(String, zeroize::Zeroizing<String>), crate::pki::PkiError> {
    let (key, pkcs8) = SigningKeyPair::generate(KeyAlgorithm::P256)?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
    params.subject_alt_names.push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    params.subject_alt_names.push(rcgen::SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
    params.distinguished_name.push(rcgen::DnType::CommonName, "kca development server");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.serial_number = Some(rcgen::SerialNumber::from_slice(crate::pki::Serial::random()?.as_bytes()));
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(365);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), private_key_pem(&pkcs8)))
}
