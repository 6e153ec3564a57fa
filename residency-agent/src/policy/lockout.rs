//! Lints for configs that are valid but lock a workload (or the host) out of what it
//! almost certainly needs: `check` prints them as warnings (`--strict` makes them
//! errors). Only enforce policies: an audit policy blocks nothing.

use crate::config::{Action, Config, Mode, PolicyConfig};

const DNS: u16 = 53;
const UDP: u8 = 17;
const TCP: u8 = 6;

/// One line per risk, naming the file, the line of the policy's first cgroup where
/// there is one, and the policy.
pub fn lint(config: &Config, mount: Option<&std::path::Path>) -> Vec<String> {
    let mut out = Vec::new();
    for p in config.policies.iter().filter(|p| p.mode == Mode::Enforce) {
        let at = match p.cgroups.first() {
            Some(c) => format!("{}:{}", config.source, c.line),
            None => config.source.clone(),
        };
        let name = &p.name;
        if p.cgroups.iter().any(|c| is_root(&c.path, mount)) {
            out.push(format!(
                "{at}: policy \"{name}\" enforces on the root cgroup \".\": every process of the host is judged by it, sshd and package managers included"
            ));
        }
        let allows: Vec<_> = p
            .entries
            .iter()
            .filter(|e| e.action == Action::Allow)
            .collect();
        if allows.is_empty() {
            out.push(format!(
                "{at}: policy \"{name}\" allows nothing: its workloads can reach no address at all, loopback included"
            ));
            continue;
        }
        if !allows_dns(p) {
            out.push(format!(
                "{at}: policy \"{name}\" allows no DNS (udp/53 or tcp/53 to any resolver): names will not resolve for its workloads"
            ));
        }
        for (family, v4) in [("IPv4", true), ("IPv6", false)] {
            if !allows.iter().any(|e| e.network.is_ipv4() == v4) {
                out.push(format!(
                    "{at}: policy \"{name}\" allows no {family} destination: all {family} traffic of its workloads is blocked, loopback included"
                ));
            }
        }
    }
    out
}

/// Whether a configured cgroup path is the root of the hierarchy: `"."` (or `./.`),
/// or the cgroup v2 mount itself written as an absolute path.
fn is_root(path: &str, mount: Option<&std::path::Path>) -> bool {
    let p = std::path::Path::new(path);
    if p.is_absolute() {
        mount.is_some_and(|m| p.components().eq(m.components()))
    } else {
        p.components().all(|c| c == std::path::Component::CurDir)
    }
}

/// Whether some allow entry lets DNS through: a bare prefix (every protocol and port)
/// or a UDP or TCP entry whose ports include 53.
fn allows_dns(p: &PolicyConfig) -> bool {
    p.entries.iter().any(|e| {
        e.action == Action::Allow
            && match e.ports {
                None => true,
                Some(s) => {
                    (s.protocol.get() == UDP || s.protocol.get() == TCP)
                        && (s.lo..=s.hi).contains(&DNS)
                }
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_recognised_however_it_is_written() {
        let mount = std::path::Path::new("/sys/fs/cgroup/unified");
        for root in [
            ".",
            "./.",
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup/unified/",
        ] {
            assert!(is_root(root, Some(mount)), "{root}");
        }
        for not in ["system.slice", "/sys/fs/cgroup/unified/x", "./x"] {
            assert!(!is_root(not, Some(mount)), "{not}");
        }
    }

    #[test]
    fn lock_out_risks_are_named() {
        let c = Config::parse(
            "[[policy]]\nname = \"host\"\ncgroups = [\".\"]\nallow = [\"10.0.0.0/8 tcp/443\"]\n\
             [[policy]]\nname = \"none\"\ncgroups = [\"x\"]\n\
             [[policy]]\nname = \"fine\"\ncgroups = [\"y\"]\nallow = [\"10.0.0.0/8\", \"::1/128\"]\n\
             [[policy]]\nname = \"audit\"\nmode = \"audit\"\ncgroups = [\"z\"]\n",
            "t.toml",
        )
        .unwrap();
        let w = lint(&c, None);
        assert!(
            w[0].starts_with("t.toml:3: policy \"host\" enforces on the root cgroup"),
            "{w:#?}"
        );
        assert!(
            w.iter().any(|l| l.contains("\"host\" allows no DNS")),
            "{w:#?}"
        );
        assert!(
            w.iter()
                .any(|l| l.contains("\"host\" allows no IPv6 destination")),
            "{w:#?}"
        );
        assert!(
            w.iter().any(|l| l.contains("\"none\" allows nothing")),
            "{w:#?}"
        );
        assert!(
            !w.iter()
                .any(|l| l.contains("\"fine\"") || l.contains("\"audit\"")),
            "{w:#?}"
        );
    }
}
