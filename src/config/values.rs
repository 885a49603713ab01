//! How one setting's text becomes a typed value: durations (humantime-style), listen
//! addresses and the few enumerations. Each parser's error is the reason an operator reads
//! after the setting's name ("invalid setting PISGATE__X (x): <reason>"), so it quotes the
//! value and shows a valid one; it is never used for secrets.
//!
//! Numbers and booleans need nothing here: the settings' deserializer reads them from text
//! (`"20"`, `"true"`, `"yes"`, `"0"`).

use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// A duration such as `250ms`, `5s`, `10m`, `2h`, `3d` or `1h 30m` (humantime's units); a
/// bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("{text:?} is too long"));
    }
    humantime::parse_duration(t)
        .map_err(|_| format!("{text:?} is not a duration such as 250ms, 5s, 10m, 2h, 3d or 1h 30m"))
}

/// A duration setting (see [`parse_duration`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = String;
    fn from_str(text: &str) -> Result<Dur, String> {
        parse_duration(text).map(Dur)
    }
}

/// A comma-separated list of durations (`5s,1m,5m`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurList(pub Vec<Duration>);

impl FromStr for DurList {
    type Err = String;
    fn from_str(text: &str) -> Result<DurList, String> {
        text.split(',')
            .map(parse_duration)
            .collect::<Result<_, _>>()
            .map(DurList)
    }
}

/// A comma-separated list of networks (`10.0.0.0/8, 192.168.1.7, fd00::/8`): CIDRs, or bare
/// addresses for one host each.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CidrList(pub Vec<ipnet::IpNet>);

impl FromStr for CidrList {
    type Err = String;
    fn from_str(text: &str) -> Result<CidrList, String> {
        text.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                item.parse::<ipnet::IpNet>()
                    .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        format!("{item:?} is not a network such as 10.0.0.0/8 or an address such as 10.1.2.3")
                    })
            })
            .collect::<Result<_, _>>()
            .map(CidrList)
    }
}

/// A socket address to listen on, such as `127.0.0.1:8080` or `[::]:8080`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub SocketAddr);

impl FromStr for Listen {
    type Err = String;
    fn from_str(text: &str) -> Result<Listen, String> {
        text.trim()
            .parse()
            .map(Listen)
            .map_err(|_| format!("{text:?} is not a socket address such as 127.0.0.1:8080"))
    }
}

/// Reads an optional setting as text and parses it with `T`'s [`FromStr`], whose error is
/// the reason shown to the operator. Text that is only white space counts as absent.
pub fn parsed<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    let Some(text) = Option::<String>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if text.trim().is_empty() {
        return Ok(None);
    }
    T::from_str(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// A case-insensitive choice among `names`; the error lists them.
pub fn choice<T: Copy>(text: &str, names: &[(&str, T)]) -> Result<T, String> {
    let wanted = text.trim().to_ascii_lowercase();
    names
        .iter()
        .find(|(name, _)| *name == wanted)
        .map(|(_, value)| *value)
        .ok_or_else(|| {
            let all: Vec<&str> = names.iter().map(|(name, _)| *name).collect();
            format!("{text:?} is not one of {}", all.join(", "))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_cidrs_or_single_addresses() {
        let list: CidrList = "10.0.0.0/8, 192.168.1.7,fd00::/8".parse().unwrap();
        let text: Vec<String> = list.0.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8"]);
        let err = "10.0.0.0/8, proxy.local".parse::<CidrList>().unwrap_err();
        assert!(err.contains("\"proxy.local\""), "{err}");
        assert!("10.0.0.0/33".parse::<CidrList>().is_err());
    }

    #[test]
    fn durations_read_like_humantime_and_bare_numbers_are_seconds() {
        for (text, secs) in [
            ("250ms", 0.25),
            ("5s", 5.0),
            ("10m", 600.0),
            ("2h", 7200.0),
            ("3d", 259_200.0),
            ("1h 30m", 5400.0),
            ("90", 90.0),
            (" 15 ", 15.0),
        ] {
            assert_eq!(parse_duration(text).unwrap().as_secs_f64(), secs, "{text}");
        }
        for bad in ["", "a minute", "5 parsecs", "-1s"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn lists_and_addresses_say_what_was_wrong() {
        assert_eq!(
            "5s,1m".parse::<DurList>().unwrap().0,
            [Duration::from_secs(5), Duration::from_secs(60)]
        );
        assert!(
            "5s,soon"
                .parse::<DurList>()
                .unwrap_err()
                .contains("\"soon\"")
        );
        assert_eq!("127.0.0.1:9090".parse::<Listen>().unwrap().0.port(), 9090);
        assert!(
            "localhost"
                .parse::<Listen>()
                .unwrap_err()
                .contains("socket address")
        );
        assert_eq!(choice("JSON", &[("json", 1), ("pretty", 2)]), Ok(1));
        assert_eq!(
            choice("xml", &[("json", 1), ("pretty", 2)]),
            Err("\"xml\" is not one of json, pretty".to_owned())
        );
    }
}
