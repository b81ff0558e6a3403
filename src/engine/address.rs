//! Client addresses as counters see them.

use std::net::{IpAddr, Ipv6Addr};

/// The counter name for a client address: the address itself for IPv4, its network for IPv6.
pub(crate) fn address_bucket(ip: IpAddr, ipv6_prefix_len: u8) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let keep = u32::from(ipv6_prefix_len.min(128));
            let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
            format!("{}/{keep}", Ipv6Addr::from(bits & mask))
        }
    }
}

/// The counter name for the network a client address belongs to, a level above
/// [`address_bucket`]: the /24 of an IPv4 address, the /48 of an IPv6 one (a site's usual
/// allocation, which holds 65,536 /64s).
pub(crate) fn network_bucket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(_) => address_bucket(ip, 48),
    }
}

/// The counter name for the region a client address belongs to, a level above
/// [`network_bucket`]: the /16 of an IPv4 address, the /32 of an IPv6 one (a provider's usual
/// allocation, which holds 65,536 /48s). Bounding it keeps one holder of many networks from
/// counting as many parties.
pub(crate) fn region_bucket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, _, _] = v4.octets();
            format!("{a}.{b}.0.0/16")
        }
        IpAddr::V6(_) => address_bucket(ip, 32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_clients_count_per_network() {
        let a = address_bucket(ip("2001:db8:1:2:aaaa::1"), 64);
        let b = address_bucket(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), 64);
        let other = address_bucket(ip("2001:db8:1:3::1"), 64);
        assert_eq!(a, b);
        assert_ne!(a, other);
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_eq!(address_bucket(ip("2001:db8::1"), 128), "2001:db8::1/128");
        assert_eq!(address_bucket(ip("192.0.2.1"), 64), "192.0.2.1");
    }

    #[test]
    fn regions_are_ipv4_16s_and_ipv6_32s() {
        assert_eq!(region_bucket(ip("192.0.2.77")), "192.0.0.0/16");
        assert_eq!(region_bucket(ip("2001:db8:1:2::1")), "2001:db8::/32");
        assert_eq!(
            region_bucket(ip("2001:db8:ffff::1")),
            region_bucket(ip("2001:db8:1::1"))
        );
        assert_ne!(
            region_bucket(ip("2001:db9::1")),
            region_bucket(ip("2001:db8::1"))
        );
    }

    #[test]
    fn networks_are_ipv4_24s_and_ipv6_48s() {
        assert_eq!(network_bucket(ip("192.0.2.77")), "192.0.2.0/24");
        assert_eq!(network_bucket(ip("2001:db8:1:2::1")), "2001:db8:1::/48");
        assert_eq!(
            network_bucket(ip("2001:db8:1:ffff::1")),
            network_bucket(ip("2001:db8:1:2::1"))
        );
        assert_ne!(
            network_bucket(ip("2001:db8:2::1")),
            network_bucket(ip("2001:db8:1::1"))
        );
    }
}
