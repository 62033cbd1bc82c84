//! Validated string newtypes used across the API.
//!
//! Each type knows two things: the schema (with CEL rules) the API server
//! enforces at `kubectl apply`, and a Rust `parse` that accepts exactly the same
//! values, for code that reads manifests without an API server (`kwire lint`,
//! the node daemon reading files).

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::keys::{KeyError, PublicKey};
use crate::schema::{CelRule, string_schema};

/// Why a value does not have the form a field expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} {expected}")]
pub struct InvalidValue {
    pub value: String,
    pub expected: &'static str,
}

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident, min = $min:expr, max = $max:expr, rules = [$($rule:expr),* $(,)?], check = $check:path $(, deserialize = $de:ident)?) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        string_newtype!(@deserialize $name $($de)?);

        impl $name {
            /// The schema rules of this type, also used by the schema tests.
            pub const RULES: &'static [CelRule] = &[$($rule),*];

            /// Accepts exactly what the API server accepts for this field.
            pub fn parse(value: impl Into<String>) -> Result<Self, InvalidValue> {
                let value = value.into();
                let len = value.chars().count();
                if !($min..=$max).contains(&len) || !$check(&value) {
                    return Err(InvalidValue { value, expected: Self::RULES[0].message });
                }
                Ok(Self(value))
            }

            /// Wraps a value without checking it (for values read back from the API server, which checked them).
            pub fn new_unchecked(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                string_schema($min, $max, Self::RULES)
            }
        }
    };
    // Read as written: the API server checked the value.
    (@deserialize $name:ident) => {
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d).map(Self)
            }
        }
    };
    // Checked with `parse`: code that slices or decodes the value relies on its form, and
    // manifests read from files (`kwire lint`, `plan`, `graph -f`) were never checked.
    (@deserialize $name:ident checked) => {
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Self::parse(String::deserialize(d)?).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_newtype!(
    /// A kernel network interface name such as `wg0-client`.
    ///
    /// The kernel allows up to 15 bytes and forbids `/`, `:` and whitespace;
    /// kwire also keeps names to printable ASCII so that characters and bytes agree.
    DeviceName,
    min = 1,
    max = 15,
    rules = [CelRule::new(
        "self.matches('^[!-.0-9;-~]+$') && self != '.' && self != '..'",
        "must be a kernel interface name: 1 to 15 printable ASCII characters without '/', ':' or spaces, e.g. wg0-client"
    )],
    check = is_device_name
);

string_newtype!(
    /// A WireGuard public (or pre-shared) key: base64 of 32 bytes, as printed by `wg pubkey`.
    WireguardKey,
    min = 44,
    max = 44,
    rules = [CelRule::new(
        "self.matches('^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$')",
        "must be a WireGuard key: 44 characters of base64 encoding 32 bytes, as printed by 'wg pubkey'"
    )],
    check = is_wireguard_key,
    deserialize = checked
);

string_newtype!(
    /// A single IPv4 or IPv6 address, e.g. `10.1.0.2` or `fd00:1::2`.
    IpAddress,
    min = 2,
    max = 45,
    rules = [CelRule::new(
        "isIP(self)",
        "must be an IPv4 or IPv6 address, e.g. 10.1.0.2 or fd00:1::2"
    )],
    check = is_ip
);

string_newtype!(
    /// A network in CIDR notation with the host bits zero, e.g. `10.2.0.0/24`.
    IpPrefix,
    min = 4,
    max = 49,
    rules = [CelRule::new(
        "isCIDR(self) && cidr(self) == cidr(self).masked()",
        "must be a network in CIDR notation with the host bits zero, e.g. 10.2.0.0/24, 0.0.0.0/0 or fd00:2::/64"
    )],
    check = is_network
);

string_newtype!(
    /// An interface address with its prefix length, e.g. `10.1.0.1/24` (host bits set).
    InterfaceAddress,
    min = 4,
    max = 49,
    rules = [CelRule::new(
        "isCIDR(self)",
        "must be an address with its prefix length, e.g. 10.1.0.1/24 or fd00:1::1/64"
    )],
    check = is_prefix
);

string_newtype!(
    /// Where a peer is reached: an IP address or a DNS name (re-resolved by the node daemon).
    EndpointHost,
    min = 1,
    max = 253,
    rules = [CelRule::new(
        "isIP(self) || self.matches('^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?([.][A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$')",
        "must be an IPv4 or IPv6 address (no brackets) or a DNS name, e.g. 192.0.2.10, 2001:db8::10 or vpn.example.com"
    )],
    check = is_endpoint_host
);

string_newtype!(
    /// The name of another Kubernetes object in the same namespace.
    ObjectName,
    min = 1,
    max = 253,
    rules = [CelRule::new(
        "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",
        "must be the name of a Kubernetes object: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
    )],
    check = is_object_name
);

fn is_device_name(s: &str) -> bool {
    s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

fn is_wireguard_key(s: &str) -> bool {
    // The length first: `PublicKey` also accepts surrounding whitespace, the API does not.
    s.len() == 44 && s.parse::<PublicKey>().is_ok()
}

fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

fn is_prefix(s: &str) -> bool {
    s.parse::<IpNet>().is_ok()
}

fn is_network(s: &str) -> bool {
    s.parse::<IpNet>().is_ok_and(|net| net.trunc() == net)
}

fn is_dns_label(label: &str, allow_upper: bool) -> bool {
    let bytes = label.as_bytes();
    let inner_ok = |b: &u8| {
        b.is_ascii_digit()
            || b.is_ascii_lowercase()
            || (allow_upper && b.is_ascii_uppercase())
            || *b == b'-'
    };
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(inner_ok)
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

fn is_endpoint_host(s: &str) -> bool {
    is_ip(s) || s.split('.').all(|label| is_dns_label(label, true))
}

fn is_object_name(s: &str) -> bool {
    s.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    })
}

impl WireguardKey {
    /// The key itself. Fails only for a value made with `new_unchecked`.
    pub fn public_key(&self) -> Result<PublicKey, KeyError> {
        self.0.parse()
    }

    /// The first characters of the key, enough for a person to tell keys apart.
    pub fn prefix(&self) -> &str {
        // By characters: a value made with `new_unchecked` may hold non-ASCII ones.
        let end = self
            .0
            .char_indices()
            .nth(8)
            .map_or(self.0.len(), |(i, _)| i);
        &self.0[..end]
    }
}

impl IpAddress {
    pub fn addr(&self) -> Result<IpAddr, InvalidValue> {
        self.0.parse().map_err(|_| InvalidValue {
            value: self.0.clone(),
            expected: Self::RULES[0].message,
        })
    }
}

impl IpPrefix {
    pub fn net(&self) -> Result<IpNet, InvalidValue> {
        match self.0.parse::<IpNet>() {
            Ok(net) if net.trunc() == net => Ok(net),
            _ => Err(InvalidValue {
                value: self.0.clone(),
                expected: Self::RULES[0].message,
            }),
        }
    }
}

impl InterfaceAddress {
    pub fn net(&self) -> Result<IpNet, InvalidValue> {
        self.0.parse().map_err(|_| InvalidValue {
            value: self.0.clone(),
            expected: Self::RULES[0].message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_follow_the_kernel_rules() {
        for ok in ["wg0", "wg0-client", "a", "exactly15bytes!", "wg.1"] {
            assert!(DeviceName::parse(ok).is_ok(), "{ok} should be accepted");
        }
        for bad in [
            "",
            "sixteen-bytes-xx",
            "wg/0",
            "wg 0",
            "wg:0",
            ".",
            "..",
            "wg\t0",
            "wgé",
        ] {
            assert!(DeviceName::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn wireguard_keys_must_decode_to_32_bytes() {
        let key = "OgbUF/E21zi9qHf5h9H6N/iM92nnNYgRtOMhReFm730=";
        assert_eq!(
            WireguardKey::parse(key)
                .unwrap()
                .public_key()
                .unwrap()
                .to_string(),
            key
        );
        assert!(WireguardKey::new_unchecked("abc").public_key().is_err());
        // Whitespace around a key: `wg` would take it, the API does not.
        assert!(WireguardKey::parse(format!("{key}\n")).is_err());
        assert!(WireguardKey::parse(format!(" {}", &key[1..])).is_err());
        assert!(WireguardKey::parse("OgbUF/E21zi9qHf5h9H6N/iM92nnNYgRtOMhReFm73=").is_err());
        assert!(WireguardKey::parse("not a key").is_err());
        // 44 characters, but the last base64 digit carries bits beyond 32 bytes.
        assert!(WireguardKey::parse("OgbUF/E21zi9qHf5h9H6N/iM92nnNYgRtOMhReFm731=").is_err());
    }

    #[test]
    fn a_key_is_checked_when_it_is_deserialized() {
        let good = "\"OgbUF/E21zi9qHf5h9H6N/iM92nnNYgRtOMhReFm730=\"";
        assert!(serde_json::from_str::<WireguardKey>(good).is_ok());
        // Non-ASCII, 44 characters: `transparent` used to take it as it was.
        for bad in [
            "\"OgbUF/E\u{e9}1zi9qHf5h9H6N/iM92nnNYgRtOMhReFm730=\"",
            "\"not a key\"",
            "\"OgbUF/E21zi9qHf5h9H6N/iM92nnNYgRtOMhReFm731=\"",
        ] {
            let error = serde_json::from_str::<WireguardKey>(bad).unwrap_err();
            assert!(
                error.to_string().contains("must be a WireGuard key"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn the_prefix_of_an_unchecked_key_is_cut_by_characters() {
        let key = WireguardKey::new_unchecked("OgbUF/E\u{e9}1zi9qHf5h9H6N/iM92nnNYgRtOMhReFm730=");
        assert_eq!(key.prefix(), "OgbUF/E\u{e9}");
        assert_eq!(WireguardKey::new_unchecked("abc").prefix(), "abc");
    }

    #[test]
    fn networks_need_zero_host_bits_but_interface_addresses_do_not() {
        assert!(IpPrefix::parse("10.2.0.0/24").is_ok());
        assert!(IpPrefix::parse("fd00:2::/64").is_ok());
        assert!(IpPrefix::parse("0.0.0.0/0").is_ok());
        assert!(IpPrefix::parse("10.2.0.1/24").is_err());
        assert!(IpPrefix::parse("10.2.0.0").is_err());
        assert!(InterfaceAddress::parse("10.1.0.1/24").is_ok());
        assert!(InterfaceAddress::parse("fd00:1::1/64").is_ok());
        assert!(InterfaceAddress::parse("10.1.0.1").is_err());
    }

    #[test]
    fn endpoint_hosts_are_addresses_or_dns_names() {
        for ok in ["192.0.2.10", "2001:db8::10", "vpn.example.com", "B-host"] {
            assert!(EndpointHost::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["[2001:db8::10]", "host:51820", "-bad.example", "a..b", ""] {
            assert!(EndpointHost::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn object_names_are_dns_subdomains() {
        assert!(ObjectName::parse("a-wg0-client").is_ok());
        assert!(ObjectName::parse("link.a-b").is_ok());
        assert!(ObjectName::parse("Upper").is_err());
        assert!(ObjectName::parse("trailing-").is_err());
    }
}
