//! Certificate serial numbers: 126 random bits, always 16 octets, always positive.

use super::PkiError;

/// A certificate serial number. Shown as uppercase hex, the form `openssl x509 -serial` prints and
/// HAProxy's `ssl_c_serial,hex` produces.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// A fresh serial: 16 random octets with the top bits fixed to `01`, so the DER INTEGER is
    /// positive, needs no leading zero and keeps exactly 16 octets (126 random bits, more than the
    /// 64 the CA/B baseline asks for, fewer than the 20-octet limit of RFC 5280).
    pub fn random() -> Result<Self, PkiError> {
        let mut bytes = vec![0u8; 16];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| PkiError::KeyGeneration)?;
        bytes[0] = (bytes[0] & 0x3f) | 0x40;
        Ok(Self(bytes))
    }

    /// Parse the hex form (either case, optional `:` separators), as a client may send it.
    pub fn parse_hex(text: &str) -> Option<Self> {
        let cleaned: String = text.chars().filter(|c| *c != ':').collect();
        if cleaned.is_empty() || cleaned.len() > 40 {
            return None;
        }
        let bytes = hex::decode(&cleaned).ok()?;
        Some(Self(bytes))
    }

    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode_upper(&self.0)
    }
}

impl std::fmt::Display for Serial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_serials_are_positive_sixteen_octets_and_distinct() {
        let a = Serial::random().unwrap();
        let b = Serial::random().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_bytes().len(), 16);
        assert_eq!(a.as_bytes()[0] & 0xc0, 0x40);
        assert_eq!(a.to_hex().len(), 32);
    }

    #[test]
    fn hex_round_trips_in_either_case() {
        let a = Serial::random().unwrap();
        assert_eq!(Serial::parse_hex(&a.to_hex().to_lowercase()), Some(a.clone()));
        assert_eq!(Serial::parse_hex("4a:3f"), Some(Serial::from_bytes(&[0x4a, 0x3f])));
        assert_eq!(Serial::parse_hex("xyz"), None);
        assert_eq!(Serial::parse_hex(""), None);
    }
}
