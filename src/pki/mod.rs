//! The PKI core: keys, authorities, leaf certificates, CSRs, CRLs, kubeconfigs and key sealing.
//!
//! Everything here is pure: no IO, no clock (times are passed in), no configuration. The only
//! side effect is drawing randomness from the operating system through aws-lc-rs.

pub mod ca;
pub mod crl;
pub mod crl_check;
pub mod csr;
pub mod der_time;
pub mod error;
pub mod import;
pub mod intermediate;
pub mod keys;
pub mod kind;
pub mod kubeconfig;
pub mod leaf;
pub mod seal;
pub mod serial;
pub mod service_account;

pub use ca::{CaSigner, NewAuthority};
pub use error::PkiError;
pub use keys::{CaKey, KeyAlgorithm, KeyStorage, SigningKeyPair};
pub use kind::AuthorityKind;
pub use serial::Serial;

/// Hex SHA-256 fingerprint of DER bytes, in the `AB:CD:...` form `openssl x509 -fingerprint -sha256` prints.
pub fn fingerprint_sha256(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    let mut out = String::with_capacity(95);
    for (i, byte) in digest.as_ref().iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{byte:02X}"));
    }
    out
}

/// Key identifier (SKI/AKI) of a public key: RFC 7093 method 1, the leftmost 160 bits of the
/// SHA-256 of the subjectPublicKey BIT STRING value (a method linters recognise).
pub fn key_identifier(spki_der: &[u8]) -> Result<Vec<u8>, PkiError> {
    use der::Decode;
    let spki = spki::SubjectPublicKeyInfoRef::from_der(spki_der)?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki.subject_public_key.raw_bytes());
    Ok(digest.as_ref()[..20].to_vec())
}

/// PEM-encode DER bytes under a label such as `CERTIFICATE` or `X509 CRL`: 64 characters a line,
/// LF endings. Written straight into one buffer of the final size (a CRL of 100,000 entries is
/// 5 MB of DER, PEM-encoded on every publication).
pub fn to_pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    const LINE: usize = 48; // bytes per 64-character line
    let mut out =
        String::with_capacity(der.len().div_ceil(3) * 4 + der.len().div_ceil(LINE) + 2 * label.len() + 32);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for line in der.chunks(LINE) {
        base64::engine::general_purpose::STANDARD.encode_string(line, &mut out);
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn pem_is_what_the_pem_crate_writes_and_reads_back() {
        for len in [0, 1, 2, 3, 47, 48, 49, 95, 96, 97, 1000, 4099] {
            let der: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let ours = super::to_pem("X509 CRL", &der);
            let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
            assert_eq!(
                ours,
                pem::encode_config(&pem::Pem::new("X509 CRL", der.clone()), config),
                "{len} bytes"
            );
            if len > 0 {
                assert_eq!(pem::parse(&ours).unwrap().contents(), der.as_slice());
            }
        }
    }
}
