//! Install-time address pools, and carving a Network's CIDR out of one.

use std::fmt;
use std::str::FromStr;

use ipnet::IpNet;
use kwire_crds::v1alpha1::IpFamily;

/// An address pool given at install time: `--pool 10.100.0.0/16` or `--pool name=fd00:100::/48`.
/// An unnamed pool is called after its family and position: `ipv4-0`, `ipv6-0`, …
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub cidr: IpNet,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "pool {value:?}: {problem} (expected CIDR or NAME=CIDR, e.g. 10.100.0.0/16 or v6=fd00:100::/48)"
)]
pub struct PoolParseError {
    pub value: String,
    pub problem: &'static str,
}

impl Pool {
    /// Parses each `--pool` value and names the unnamed ones.
    pub fn parse_all<S: AsRef<str>>(values: &[S]) -> Result<Vec<Pool>, PoolParseError> {
        let mut pools = Vec::new();
        let (mut v4, mut v6) = (0, 0);
        for value in values {
            let value = value.as_ref();
            let (name, cidr) = match value.split_once('=') {
                Some((name, cidr)) => (Some(name.trim()), cidr.trim()),
                None => (None, value.trim()),
            };
            let err = |problem| PoolParseError {
                value: value.to_string(),
                problem,
            };
            let cidr: IpNet = cidr.parse().map_err(|_| err("not a CIDR"))?;
            if cidr.trunc() != cidr {
                return Err(err("host bits are set"));
            }
            let name = match name {
                Some("") => return Err(err("empty name")),
                Some(n) => n.to_string(),
                None => match cidr {
                    IpNet::V4(_) => {
                        v4 += 1;
                        format!("ipv4-{}", v4 - 1)
                    }
                    IpNet::V6(_) => {
                        v6 += 1;
                        format!("ipv6-{}", v6 - 1)
                    }
                },
            };
            if pools.iter().any(|p: &Pool| p.name == name) {
                return Err(err("duplicate name"));
            }
            pools.push(Pool { name, cidr });
        }
        Ok(pools)
    }

    pub fn family(&self) -> IpFamily {
        family_of(self.cidr)
    }
}

impl FromStr for Pool {
    type Err = PoolParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pool::parse_all(&[s]).map(|mut v| v.remove(0))
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.cidr)
    }
}

pub fn family_of(net: IpNet) -> IpFamily {
    match net {
        IpNet::V4(_) => IpFamily::IPv4,
        IpNet::V6(_) => IpFamily::IPv6,
    }
}

/// Why a Network's CIDR could not be carved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CarveError {
    #[error(
        "no address pool named {name} is configured (configured: {configured}): set spec.pool to one of them, or add --pool {name}=CIDR to the operator"
    )]
    UnknownPool { name: String, configured: String },
    #[error(
        "no {family:?} address pool is configured: start the operator with --pool CIDR, or give the Network an explicit spec.cidr"
    )]
    NoPoolForFamily { family: IpFamily },
    #[error(
        "pool {pool} ({cidr}) is {family:?}, but the Network asks for {wanted:?}: choose a pool of that family"
    )]
    WrongFamily {
        pool: String,
        cidr: IpNet,
        family: IpFamily,
        wanted: IpFamily,
    },
    #[error(
        "prefixLength {prefix_length} does not fit pool {pool} ({cidr}): choose a prefixLength from {min} to {max}"
    )]
    PrefixLength {
        pool: String,
        cidr: IpNet,
        prefix_length: u8,
        min: u8,
        max: u8,
    },
    #[error(
        "pool {pool} ({cidr}) has no free /{prefix_length} left: add a pool, use a smaller prefixLength, or delete unused Networks"
    )]
    Exhausted {
        pool: String,
        cidr: IpNet,
        prefix_length: u8,
    },
}

impl CarveError {
    pub fn reason(&self) -> &'static str {
        match self {
            CarveError::UnknownPool { .. } => "UnknownPool",
            CarveError::NoPoolForFamily { .. } => "NoPool",
            CarveError::WrongFamily { .. } => "PoolFamilyMismatch",
            CarveError::PrefixLength { .. } => "PrefixLengthDoesNotFit",
            CarveError::Exhausted { .. } => "PoolExhausted",
        }
    }
}

/// The pool a Network carves from: the named one, else the first of the family.
pub fn choose_pool<'a>(
    pools: &'a [Pool],
    name: Option<&str>,
    family: IpFamily,
) -> Result<&'a Pool, CarveError> {
    let pool = match name {
        Some(name) => {
            pools
                .iter()
                .find(|p| p.name == name)
                .ok_or_else(|| CarveError::UnknownPool {
                    name: name.to_string(),
                    configured: if pools.is_empty() {
                        "none".to_string()
                    } else {
                        pools
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                })?
        }
        None => pools
            .iter()
            .find(|p| p.family() == family)
            .ok_or(CarveError::NoPoolForFamily { family })?,
    };
    if pool.family() != family {
        return Err(CarveError::WrongFamily {
            pool: pool.name.clone(),
            cidr: pool.cidr,
            family: pool.family(),
            wanted: family,
        });
    }
    Ok(pool)
}

fn to_u128(net: IpNet) -> (u128, u128) {
    let (start, host_bits) = match net {
        IpNet::V4(n) => (
            u128::from(u32::from(n.network())),
            32 - u32::from(n.prefix_len()),
        ),
        IpNet::V6(n) => (u128::from(n.network()), 128 - u32::from(n.prefix_len())),
    };
    let last = if host_bits >= 128 {
        u128::MAX
    } else {
        start + ((1u128 << host_bits) - 1)
    };
    (start, last)
}

/// The lowest aligned `/prefix_length` of `pool` that overlaps none of `taken`.
pub fn carve(pool: &Pool, prefix_length: u8, taken: &[IpNet]) -> Result<IpNet, CarveError> {
    let cidr = pool.cidr;
    if prefix_length < cidr.prefix_len() || prefix_length > cidr.max_prefix_len() {
        return Err(CarveError::PrefixLength {
            pool: pool.name.clone(),
            cidr,
            prefix_length,
            min: cidr.prefix_len(),
            max: cidr.max_prefix_len(),
        });
    }
    let mut taken: Vec<(u128, u128)> = taken
        .iter()
        .filter(|t| family_of(**t) == pool.family())
        .map(|t| to_u128(*t))
        .collect();
    taken.sort();
    let (pool_start, pool_last) = to_u128(cidr);
    let block_bits = u32::from(cidr.max_prefix_len() - prefix_length);
    let block_size_minus_one = if block_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << block_bits) - 1
    };
    let mut candidate = pool_start;
    while let Some(candidate_last) = candidate.checked_add(block_size_minus_one) {
        if candidate_last > pool_last {
            break;
        }
        // The first taken range that overlaps the candidate block, if any.
        match taken
            .iter()
            .find(|(s, l)| *s <= candidate_last && *l >= candidate)
        {
            None => {
                let addr = match cidr {
                    IpNet::V4(_) => std::net::IpAddr::V4((candidate as u32).into()),
                    IpNet::V6(_) => std::net::IpAddr::V6(candidate.into()),
                };
                return Ok(IpNet::new(addr, prefix_length).expect("prefix length checked above"));
            }
            Some((_, last)) => {
                // Jump to the first aligned block after the taken range.
                let Some(next) = last.checked_add(1) else {
                    break;
                };
                let aligned = next
                    .checked_add(block_size_minus_one)
                    .map(|n| n & !block_size_minus_one);
                match aligned {
                    Some(a) if a > candidate => candidate = a,
                    _ => break,
                }
            }
        }
    }
    Err(CarveError::Exhausted {
        pool: pool.name.clone(),
        cidr,
        prefix_length,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn pools_are_named_by_family_and_position_unless_named() {
        let pools = Pool::parse_all(&[
            "10.100.0.0/16",
            "fd00:100::/48",
            "big=10.200.0.0/16",
            "10.50.0.0/16",
        ])
        .unwrap();
        let names: Vec<_> = pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["ipv4-0", "ipv6-0", "big", "ipv4-1"]);
    }

    #[test]
    fn pools_with_host_bits_bad_cidrs_or_duplicate_names_are_rejected() {
        assert!(Pool::parse_all(&["10.100.0.1/16"]).is_err());
        assert!(Pool::parse_all(&["nonsense"]).is_err());
        assert!(Pool::parse_all(&["=10.0.0.0/8"]).is_err());
        assert!(Pool::parse_all(&["a=10.0.0.0/8", "a=10.1.0.0/16"]).is_err());
    }

    #[test]
    fn the_first_pool_of_the_family_is_chosen_unless_one_is_named() {
        let pools =
            Pool::parse_all(&["fd00:100::/48", "10.100.0.0/16", "b=10.200.0.0/16"]).unwrap();
        assert_eq!(
            choose_pool(&pools, None, IpFamily::IPv4).unwrap().name,
            "ipv4-0"
        );
        assert_eq!(
            choose_pool(&pools, None, IpFamily::IPv6).unwrap().name,
            "ipv6-0"
        );
        assert_eq!(
            choose_pool(&pools, Some("b"), IpFamily::IPv4).unwrap().name,
            "b"
        );
        assert_eq!(
            choose_pool(&pools, Some("b"), IpFamily::IPv6)
                .unwrap_err()
                .reason(),
            "PoolFamilyMismatch"
        );
        let unknown = choose_pool(&pools, Some("x"), IpFamily::IPv4).unwrap_err();
        assert!(unknown.to_string().contains("b=10.200.0.0/16"), "{unknown}");
        assert_eq!(
            choose_pool(&[], None, IpFamily::IPv4).unwrap_err().reason(),
            "NoPool"
        );
    }

    #[test]
    fn carving_takes_the_lowest_free_aligned_block() {
        let pool: Pool = "10.100.0.0/16".parse().unwrap();
        let cases: &[(&[&str], u8, &str)] = &[
            (&[], 24, "10.100.0.0/24"),
            (&["10.100.0.0/24"], 24, "10.100.1.0/24"),
            (&["10.100.0.0/24", "10.100.2.0/24"], 24, "10.100.1.0/24"),
            (&["10.100.0.0/25"], 24, "10.100.1.0/24"),
            (&["10.100.0.0/23"], 22, "10.100.4.0/22"),
            (&["10.100.1.0/24"], 23, "10.100.2.0/23"),
            (&["10.99.0.0/16", "10.101.0.0/16"], 24, "10.100.0.0/24"),
            (&["10.100.0.128/25"], 25, "10.100.0.0/25"),
            (&["fd00::/8"], 24, "10.100.0.0/24"),
        ];
        for (taken, len, expected) in cases {
            let taken: Vec<IpNet> = taken.iter().map(|t| net(t)).collect();
            assert_eq!(
                carve(&pool, *len, &taken).unwrap(),
                net(expected),
                "{taken:?} /{len}"
            );
        }
    }

    #[test]
    fn a_taken_range_covering_the_pool_exhausts_it() {
        let pool: Pool = "10.100.0.0/16".parse().unwrap();
        assert_eq!(
            carve(&pool, 24, &[net("10.0.0.0/8")]).unwrap_err().reason(),
            "PoolExhausted"
        );
        assert_eq!(
            carve(&pool, 24, &[net("10.100.0.0/16")])
                .unwrap_err()
                .reason(),
            "PoolExhausted"
        );
    }

    #[test]
    fn carving_ipv6_from_a_48_gives_64s() {
        let pool: Pool = "fd00:100::/48".parse().unwrap();
        assert_eq!(carve(&pool, 64, &[]).unwrap(), net("fd00:100::/64"));
        assert_eq!(
            carve(&pool, 64, &[net("fd00:100::/64")]).unwrap(),
            net("fd00:100:0:1::/64")
        );
        assert_eq!(
            carve(&pool, 40, &[]).unwrap_err().reason(),
            "PrefixLengthDoesNotFit"
        );
    }

    #[test]
    fn the_whole_ipv6_space_can_be_a_pool() {
        let pool: Pool = "::/0".parse().unwrap();
        assert_eq!(carve(&pool, 0, &[]).unwrap(), net("::/0"));
        assert_eq!(carve(&pool, 1, &[net("::/1")]).unwrap(), net("8000::/1"));
        assert_eq!(
            carve(&pool, 1, &[net("::/1"), net("8000::/1")])
                .unwrap_err()
                .reason(),
            "PoolExhausted"
        );
    }
}
