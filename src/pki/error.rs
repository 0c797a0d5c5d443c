//! The one error type of the PKI core.

/// What can go wrong while making keys, certificates and CRLs.
///
/// Messages never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    #[error("key generation failed")]
    KeyGeneration,
    #[error("the private key could not be loaded: {0}")]
    InvalidKey(&'static str),
    #[error("signing failed")]
    Signing,
    /// The key is kept in a device (a PKCS#11 token) that cannot sign now: absent, refusing the
    /// PIN, or failing. The message says which, never the PIN.
    #[error("the CA key is unavailable: {0}")]
    KeyUnavailable(String),
    #[error("encoding failed: {0}")]
    Encoding(String),
    #[error("invalid CSR: {0}")]
    InvalidCsr(String),
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    /// A requested lifetime that reaches past the CA's own: the request's fault, not kca's.
    #[error(
        "the certificate would outlive its CA, which expires at {}",
        .0.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
    )]
    OutlivesCa(time::OffsetDateTime),
    #[error("a sealed key could not be opened: the master key is wrong or the data is corrupt")]
    Unseal,
    #[error("invalid master key: {0}")]
    InvalidMasterKey(&'static str),
    /// A CA offered for import that kca refuses: the request's fault (422), naming its field.
    #[error("{detail}")]
    ImportRefused { field: &'static str, detail: String },
}

impl From<der::Error> for PkiError {
    fn from(err: der::Error) -> Self {
        PkiError::Encoding(err.to_string())
    }
}

impl From<rcgen::Error> for PkiError {
    fn from(err: rcgen::Error) -> Self {
        PkiError::Encoding(err.to_string())
    }
}
