//! Aggregation of a source's prefixes: prefixes covered by another are dropped and
//! adjacent siblings merged (`10.0.0.0/25` + `10.0.0.128/25` = `10.0.0.0/24`), by
//! `ipnet`'s interval merge rather than hand-written bit arithmetic.

use ipnet::IpNet;
use ipnetwork::IpNetwork;

/// Drops prefixes covered by others and merges adjacent siblings, repeatedly; IPv4
/// first, each family in address order.
pub fn aggregate(prefixes: Vec<IpNetwork>) -> Vec<IpNetwork> {
    let nets: Vec<IpNet> = prefixes
        .into_iter()
        .map(|p| IpNet::new(p.network(), p.prefix()).expect("a valid prefix length"))
        .collect();
    IpNet::aggregate(&nets)
        .into_iter()
        .map(|n| IpNetwork::new(n.network(), n.prefix_len()).expect("a valid prefix length"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNetwork> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn strs(list: Vec<IpNetwork>) -> Vec<String> {
        list.into_iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn aggregation_collapses_covered_and_adjacent() {
        let out = aggregate(nets(&[
            "10.0.0.128/25",
            "10.0.0.0/25",
            "10.0.1.0/24",
            "10.0.0.7/32",
            "192.0.2.0/24",
            "2001:db8::/33",
            "2001:db8:8000::/33",
        ]));
        assert_eq!(
            strs(out),
            vec!["10.0.0.0/23", "192.0.2.0/24", "2001:db8::/32"]
        );
        // Not siblings: 10.0.1.0/24 and 10.0.2.0/24 do not make a /23.
        assert_eq!(
            strs(aggregate(nets(&["10.0.1.0/24", "10.0.2.0/24"]))),
            vec!["10.0.1.0/24", "10.0.2.0/24"]
        );
        assert_eq!(
            strs(aggregate(nets(&["0.0.0.0/1", "128.0.0.0/1"]))),
            vec!["0.0.0.0/0"]
        );
    }
}
