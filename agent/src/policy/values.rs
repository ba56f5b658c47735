//! The text forms of a policy's values: days, times and prefixes as a
//! policy file (or `check --at`) writes them, and times as reasons and
//! reports show them.
//!
//! Invariants: a time is read only with its UTC offset, and held in UTC;
//! what [`fmt_time`] writes, [`parse_time`] reads back to the same instant;
//! a prefix is read only without host bits (a bare address is its own /32
//! or /128). An error is a sentence that names the text and shows the
//! expected form.

use std::{net::IpAddr, str::FromStr};

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use ipnet::IpNet;

/// Reads a `YYYY-MM-DD` day.
pub fn parse_date(text: &str) -> Result<NaiveDate, String> {
    let b = text.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return Err(format!(
            "`{text}` is not a date; expected YYYY-MM-DD, e.g. 2020-05-01"
        ));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| format!("`{text}` is not a valid date (YYYY-MM-DD)"))
}

/// Reads an RFC 3339 time with an offset (`2021-01-10T12:00:00Z`,
/// `2021-01-10T13:00:00+01:00`), as UTC. For `granted`, `revoked`, `started`
/// and `check --at`.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let without_offset = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .any(|f| NaiveDateTime::parse_from_str(text, f).is_ok());
    if without_offset {
        Err(format!(
            "`{text}` has no UTC offset; add one, e.g. `{text}Z` for UTC (RFC 3339)"
        ))
    } else {
        Err(format!(
            "`{text}` is not an RFC 3339 time with an offset, e.g. 2021-01-10T12:00:00Z"
        ))
    }
}

/// How times appear in reasons and reports: RFC 3339 in UTC, `Z`, fractions
/// of a second only when there are some.
pub fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Reads a prefix of `allow_destinations`. A bare address is its own /32 or
/// /128.
pub fn parse_prefix(text: &str) -> Result<IpNet, String> {
    if !text.contains('/') {
        return IpAddr::from_str(text).map(IpNet::from).map_err(|_| {
            format!("`{text}` is not an IPv4 or IPv6 prefix, e.g. 10.0.0.0/8 or fd00::/8")
        });
    }
    let net = IpNet::from_str(text).map_err(|_| {
        format!("`{text}` is not an IPv4 or IPv6 prefix, e.g. 10.0.0.0/8 or fd00::/8")
    })?;
    let network = net.trunc();
    if network != net {
        return Err(format!("{text} has host bits set; did you mean {network}?"));
    }
    Ok(net)
}
