//! Conversions between `time::OffsetDateTime` and X.509 times.

use der::DateTime;
use der::asn1::{GeneralizedTime, UtcTime};
use time::OffsetDateTime;
use x509_cert::time::Time;

use super::PkiError;

/// UTCTime through 2049, GeneralizedTime from 2050, as RFC 5280 §4.1.2.5 requires.
pub fn to_x509_time(at: OffsetDateTime) -> Result<Time, PkiError> {
    let seconds =
        u64::try_from(at.unix_timestamp()).map_err(|_| PkiError::Encoding("time before 1970".into()))?;
    let date_time = DateTime::from_unix_duration(std::time::Duration::from_secs(seconds))?;
    if date_time.year() < 2050 {
        Ok(Time::UtcTime(UtcTime::from_date_time(date_time)?))
    } else {
        Ok(Time::GeneralTime(GeneralizedTime::from_date_time(date_time)))
    }
}

pub fn from_x509_time(time: &Time) -> OffsetDateTime {
    let seconds = time.to_unix_duration().as_secs();
    OffsetDateTime::from_unix_timestamp(seconds as i64).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn switches_to_generalized_time_in_2050() {
        assert!(matches!(to_x509_time(datetime!(2049-12-31 23:59:59 UTC)).unwrap(), Time::UtcTime(_)));
        assert!(matches!(to_x509_time(datetime!(2050-01-01 00:00:00 UTC)).unwrap(), Time::GeneralTime(_)));
        let t = datetime!(2036-02-03 04:05:06 UTC);
        assert_eq!(from_x509_time(&to_x509_time(t).unwrap()), t);
    }
}
