//! When a certificate held in the state must be issued again: revoked (or expired) in kca, or
//! inside its early-renewal window. Shared by `kca_kubeconfig` and `kca_component_certificate`.

use tf_provider::value::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::schema::Str;

/// Why the certificate must be replaced now, if it must.
pub fn reason(
    serial: &Str,
    status: &Str,
    not_after: &Str,
    early_renewal_seconds: &Value<i64>,
) -> Option<String> {
    let serial = serial.as_ref_option().map(String::as_str).unwrap_or("?");
    if let Value::Value(status) = status
        && status != "active"
    {
        return Some(format!("certificate {serial} is {status} in kca"));
    }
    let not_after = OffsetDateTime::parse(not_after.as_ref_option()?, &Rfc3339).ok()?;
    let early = time::Duration::seconds(early_renewal_seconds.as_ref_option().copied().unwrap_or(0));
    (OffsetDateTime::now_utc() >= not_after - early)
        .then(|| format!("certificate {serial} expires at {not_after}, inside the early-renewal window"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Str {
        Value::Value(s.to_string())
    }

    #[test]
    fn revoked_expiring_and_fresh() {
        let t = OffsetDateTime::now_utc() + time::Duration::hours(2);
        let later = format!(
            "{}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
        assert!(reason(&v("AB"), &v("revoked"), &v(&later), &Value::Value(0)).unwrap().contains("revoked"));
        assert!(reason(&v("AB"), &v("active"), &v(&later), &Value::Value(3 * 3600)).is_some());
        assert!(reason(&v("AB"), &v("active"), &v(&later), &Value::Value(3600)).is_none());
        assert!(reason(&v("AB"), &v("active"), &v(&later), &Value::Null).is_none());
    }
}
