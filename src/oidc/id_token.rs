//! Checking an ID token: its signature against the provider's published keys (asymmetric
//! algorithms only), `iss`, `aud` (and `azp`), `exp` and `iat` at the time passed in, and the
//! `nonce` the sign-in was started with. No IO: the key set and the clock are the caller's.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// Clock skew tolerated on `exp` and `iat`.
pub const LEEWAY_SECONDS: i64 = 60;

/// The algorithms an ID token may be signed with. Never `none` and never a shared secret (HS*):
/// the client secret must not be able to mint identities.
const ACCEPTED: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// What the token must say.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// The nonce the authorization request carried; `None` for grants that send none (the device
    /// grant), where a nonce in the token is ignored.
    pub nonce: Option<&'a str>,
    /// Now, in seconds since the epoch.
    pub now: i64,
}

/// Why an ID token is refused. The messages never quote the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("the ID token is malformed")]
    Malformed,
    #[error("the ID token is signed with an algorithm kca does not accept ({0})")]
    Algorithm(String),
    /// No published key has the token's `kid`: the provider may have rotated its keys.
    #[error("the ID token is signed with a key the provider does not publish")]
    UnknownKey,
    #[error("the ID token's signature does not verify")]
    Signature,
    #[error("the ID token was issued by {0:?}, not by the configured issuer")]
    Issuer(String),
    #[error("the ID token is not meant for kca (wrong audience)")]
    Audience,
    #[error("the ID token has expired")]
    Expired,
    #[error("the ID token was issued in the future")]
    NotYetValid,
    #[error("the ID token's nonce does not match the sign-in")]
    Nonce,
    #[error("the ID token lacks the {0} claim")]
    Missing(&'static str),
}

/// The checked claims of an ID token (every claim, for the username and groups claims).
#[derive(Debug, Clone)]
pub struct IdClaims {
    pub issuer: String,
    pub subject: String,
    pub claims: serde_json::Map<String, Value>,
}

impl IdClaims {
    /// A string claim.
    pub fn string(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// A claim that lists strings (a single string counts as a list of one).
    pub fn strings(&self, name: &str) -> Vec<String> {
        match self.claims.get(name) {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            Some(Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        }
    }
}

/// Check `token` against the key set and `expected`.
pub fn validate(token: &str, keys: &JwkSet, expected: &Expected<'_>) -> Result<IdClaims, IdTokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| IdTokenError::Malformed)?;
    if !ACCEPTED.contains(&header.alg) {
        return Err(IdTokenError::Algorithm(format!("{:?}", header.alg)));
    }
    let jwk = match header.kid.as_deref() {
        Some(kid) => keys.find(kid).ok_or(IdTokenError::UnknownKey)?,
        // Without a kid, only a provider publishing a single key is unambiguous.
        None if keys.keys.len() == 1 => &keys.keys[0],
        None => return Err(IdTokenError::UnknownKey),
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|_| IdTokenError::UnknownKey)?;
    let mut validation = Validation::new(header.alg);
    // Times are checked below against the `now` passed in; iss and aud here and again below,
    // for the precise refusal.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, &validation).map_err(
        |e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => IdTokenError::Signature,
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm
            | jsonwebtoken::errors::ErrorKind::InvalidKeyFormat => {
                IdTokenError::Algorithm(format!("{:?} with this key", header.alg))
            }
            _ => IdTokenError::Malformed,
        },
    )?;
    let claims = data.claims;
    let issuer = claims.get("iss").and_then(Value::as_str).ok_or(IdTokenError::Missing("iss"))?;
    if issuer != expected.issuer {
        // Quoted in logs and pages: printable characters only.
        return Err(IdTokenError::Issuer(issuer.chars().filter(|c| !c.is_control()).take(200).collect()));
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == expected.client_id,
        Some(Value::Array(auds)) => {
            auds.iter().any(|a| a.as_str() == Some(expected.client_id))
                // With other audiences beside kca, the authorized party must be kca.
                && (auds.len() == 1
                    || claims.get("azp").and_then(Value::as_str) == Some(expected.client_id))
        }
        _ => return Err(IdTokenError::Missing("aud")),
    };
    if !audience_ok {
        return Err(IdTokenError::Audience);
    }
    if let Some(azp) = claims.get("azp").and_then(Value::as_str)
        && azp != expected.client_id
    {
        return Err(IdTokenError::Audience);
    }
    let exp = claims.get("exp").and_then(Value::as_i64).ok_or(IdTokenError::Missing("exp"))?;
    if exp + LEEWAY_SECONDS <= expected.now {
        return Err(IdTokenError::Expired);
    }
    if let Some(iat) = claims.get("iat").and_then(Value::as_i64)
        && iat > expected.now + LEEWAY_SECONDS
    {
        return Err(IdTokenError::NotYetValid);
    }
    if let Some(nonce) = expected.nonce {
        let got = claims.get("nonce").and_then(Value::as_str).ok_or(IdTokenError::Nonce)?;
        if !constant_time_eq(got.as_bytes(), nonce.as_bytes()) {
            return Err(IdTokenError::Nonce);
        }
    }
    let subject = claims.get("sub").and_then(Value::as_str).ok_or(IdTokenError::Missing("sub"))?;
    if subject.is_empty() {
        return Err(IdTokenError::Missing("sub"));
    }
    Ok(IdClaims { issuer: issuer.to_string(), subject: subject.to_string(), claims })
}

/// Equal bytes, compared in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{EncodingKey, Header};

    /// A P-256 key of the test provider, and its JWKS entry.
    struct TestKey {
        encoding: EncodingKey,
        jwk: Value,
    }

    fn test_key(kid: &str) -> TestKey {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref();
        let (x, y) = (&point[1..33], &point[33..65]);
        TestKey {
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: serde_json::json!({
                "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
            }),
        }
    }

    fn jwks(keys: &[&TestKey]) -> JwkSet {
        serde_json::from_value(
            serde_json::json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}),
        )
        .unwrap()
    }

    const NOW: i64 = 1_800_000_000;
    const ISSUER: &str = "https://idp.example";

    fn claims() -> Value {
        serde_json::json!({
            "iss": ISSUER, "aud": "kca", "sub": "u-1", "exp": NOW + 300, "iat": NOW - 10,
            "nonce": "n-1", "email": "alice@example.com", "groups": ["platform", "dev"],
        })
    }

    fn sign(key: &TestKey, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
    }

    fn expected(nonce: Option<&'static str>) -> Expected<'static> {
        Expected { issuer: ISSUER, client_id: "kca", nonce, now: NOW }
    }

    #[test]
    fn a_good_token_passes_and_its_claims_are_read() {
        let key = test_key("k1");
        let checked = validate(&sign(&key, "k1", &claims()), &jwks(&[&key]), &expected(Some("n-1"))).unwrap();
        assert_eq!(checked.subject, "u-1");
        assert_eq!(checked.string("email"), Some("alice@example.com"));
        assert_eq!(checked.strings("groups"), ["platform", "dev"]);
    }

    #[test]
    fn each_wrong_claim_is_refused_for_its_reason() {
        let key = test_key("k1");
        let keys = jwks(&[&key]);
        let with = |name: &str, value: Value| {
            let mut c = claims();
            c[name] = value;
            validate(&sign(&key, "k1", &c), &keys, &expected(Some("n-1")))
        };
        assert_eq!(with("aud", "other-client".into()).unwrap_err(), IdTokenError::Audience);
        assert_eq!(with("aud", serde_json::json!(["other", "kca"])).unwrap_err(), IdTokenError::Audience);
        assert_eq!(with("azp", "other".into()).unwrap_err(), IdTokenError::Audience);
        assert_eq!(with("exp", (NOW - LEEWAY_SECONDS - 1).into()).unwrap_err(), IdTokenError::Expired);
        assert_eq!(with("iat", (NOW + 3600).into()).unwrap_err(), IdTokenError::NotYetValid);
        assert_eq!(with("nonce", "replayed-from-another-sign-in".into()).unwrap_err(), IdTokenError::Nonce);
        assert!(matches!(
            with("iss", "https://evil.example".into()).unwrap_err(),
            IdTokenError::Issuer(iss) if iss == "https://evil.example"
        ));
        let mut no_nonce = claims();
        no_nonce.as_object_mut().unwrap().remove("nonce");
        assert_eq!(
            validate(&sign(&key, "k1", &no_nonce), &keys, &expected(Some("n-1"))).unwrap_err(),
            IdTokenError::Nonce
        );
        // The device grant sends no nonce: none is expected.
        assert!(validate(&sign(&key, "k1", &no_nonce), &keys, &expected(None)).is_ok());
    }

    #[test]
    fn keys_the_provider_does_not_publish_and_forged_signatures_are_refused() {
        let published = test_key("k1");
        let attacker = test_key("k1");
        let keys = jwks(&[&published]);
        // The attacker's key under the published kid: the signature does not verify.
        assert_eq!(
            validate(&sign(&attacker, "k1", &claims()), &keys, &expected(Some("n-1"))).unwrap_err(),
            IdTokenError::Signature
        );
        // A rotated key the set does not have yet: the caller refetches the set.
        let rotated = test_key("k2");
        assert_eq!(
            validate(&sign(&rotated, "k2", &claims()), &keys, &expected(Some("n-1"))).unwrap_err(),
            IdTokenError::UnknownKey
        );
        assert!(
            validate(
                &sign(&rotated, "k2", &claims()),
                &jwks(&[&published, &rotated]),
                &expected(Some("n-1"))
            )
            .is_ok()
        );
    }

    #[test]
    fn symmetric_and_unsigned_tokens_are_refused() {
        let key = test_key("k1");
        let keys = jwks(&[&key]);
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let hs =
            jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(b"client-secret")).unwrap();
        assert!(matches!(validate(&hs, &keys, &expected(Some("n-1"))), Err(IdTokenError::Algorithm(_))));
        let body = URL_SAFE_NO_PAD.encode(claims().to_string());
        let none = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#));
        assert!(validate(&none, &keys, &expected(Some("n-1"))).is_err());
        assert_eq!(validate("not a token", &keys, &expected(None)).unwrap_err(), IdTokenError::Malformed);
    }
}
