//! `status`, the daemon's side: what the agent enforces, rendered as text and JSON
//! from a snapshot of its state ([`View`]) by a plain function, [`render`].

use std::{collections::BTreeMap, path::PathBuf, sync::atomic::Ordering};

use residency_common::Verdict;

use super::Daemon;
use crate::{
    control::Response,
    host::BoundCgroup,
    kernel::PacketCounts,
    kubernetes::{self, Layout, PlacedPod},
    metrics::sources::SourceState,
    policy::{self, Versioned},
};

/// Destinations shown per policy in `top_blocked`.
const TOP_BLOCKED: usize = 10;

/// Everything `status` shows, read from the daemon at one moment.
pub struct View<'a> {
    pub versioned: &'a Versioned,
    /// Packets per `(policy id, verdict, family)`.
    pub packets: PacketCounts,
    pub bound: &'a [BoundCgroup],
    pub attached: &'a BTreeMap<u64, PathBuf>,
    pub uptime_seconds: u64,
    pub instance: &'a std::path::Path,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub last_reload: &'a str,
    pub reload_history: &'a [super::reload::ReloadRecord],
    /// The most blocked destinations per policy, as events show them.
    pub top_blocked: BTreeMap<String, Vec<(String, u64)>>,
    /// With `[kubernetes]`: the selected pods and their policies' cgroups.
    pub pods: &'a [PlacedPod],
    /// Every policy's IP-range sources, their age and last refresh.
    pub sources: &'a [SourceState],
}

/// The `status` answer: a line per policy (and its cgroups) and the same as JSON.
pub fn render(s: &View<'_>) -> Response {
    let v = s.versioned;
    let mut text = format!(
        "residency-agent {} — generation {}, up {}s, pins {}\n",
        env!("CARGO_PKG_VERSION"),
        v.generation,
        s.uptime_seconds,
        s.instance.display()
    );
    let mut policies = Vec::new();
    for (p, id) in v.config.policies.iter().zip(&v.ids) {
        let c = policy::counts(p);
        let count = |verdict: Verdict| -> u64 {
            s.packets
                .iter()
                .filter(|((pid, vd, _), _)| *pid == *id && *vd == verdict)
                .map(|(_, n)| n)
                .sum()
        };
        let cgroups: Vec<String> = s
            .bound
            .iter()
            .filter(|b| v.config.policies[b.policy].name == p.name)
            .map(|b| b.path.display().to_string())
            .collect();
        text.push_str(&format!(
            "  policy {} mode={} ipv4={} ipv6={} allowed={} blocked={} audited={}\n",
            p.name,
            p.mode.as_str(),
            c.allow_v4 + c.deny_v4,
            c.allow_v6 + c.deny_v6,
            count(Verdict::Allowed),
            count(Verdict::Blocked),
            count(Verdict::Audited)
        ));
        for cg in &cgroups {
            text.push_str(&format!("    cgroup {cg}\n"));
        }
        let pods: Vec<String> = s
            .pods
            .iter()
            .filter(|pod| v.config.policies[pod.policy].name == p.name)
            .map(|pod| format!("{}/{}", pod.namespace, pod.name))
            .collect();
        for pod in &pods {
            text.push_str(&format!("    pod {pod}\n"));
        }
        let sources: Vec<&SourceState> = s
            .sources
            .iter()
            .filter(|src| src.policy == p.name)
            .collect();
        for src in &sources {
            text.push_str(&format!("    source {}\n", describe_source(src)));
        }
        // Lookup tables are the rule; a family without them (they did not fit in the
        // room left, or could not be written) is worth a line: its first packets cost
        // more. With no room at all the tables are off, which the config says.
        let tables = [("ipv4", &v.tables.v4), ("ipv6", &v.tables.v6)]
            .map(|(family, w)| (family, w.policies.contains(id)));
        let without: Vec<&str> = tables
            .iter()
            .zip([v.table_room.v4, v.table_room.v6])
            .filter(|((_, has), room)| !has && *room > 0)
            .map(|((family, _), _)| *family)
            .collect();
        if !without.is_empty() {
            text.push_str(&format!(
                "    lookup tables: none for {} (they did not fit in [agent] *_table_chunks \
                 or could not be written, see the log; the tries judge its first packets \
                 alone, exactly but slower)\n",
                without.join(", ")
            ));
        }
        policies.push(serde_json::json!({
            "name": p.name, "mode": p.mode.as_str(), "id": id,
            "prefixes": {"ipv4": c.allow_v4 + c.deny_v4, "ipv6": c.allow_v6 + c.deny_v6},
            "cgroups": cgroups,
            "pods": pods,
            "sources": sources.iter().map(|src| {
                let mut v = serde_json::to_value(src).unwrap_or_default();
                v["age_seconds"] = serde_json::json!(src.age_seconds());
                v
            }).collect::<Vec<_>>(),
            "packets": {"allowed": count(Verdict::Allowed), "blocked": count(Verdict::Blocked), "audited": count(Verdict::Audited)},
            "lookup_tables": tables.iter().map(|(f, has)| (f.to_string(), *has)).collect::<BTreeMap<_, _>>(),
        }));
    }
    text.push_str(&format!(
        "  attached at {} cgroup(s); last reload: {}\n",
        s.attached.len(),
        if s.last_reload.is_empty() {
            "none"
        } else {
            s.last_reload
        }
    ));
    Response {
        ok: true,
        text,
        data: serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "generation": v.generation,
            "uptime_seconds": s.uptime_seconds,
            "config": v.config.source,
            "pins": s.instance,
            "attached_cgroups": s.attached.values().collect::<Vec<_>>(),
            "policies": policies,
            "reloads": {"success": s.reloads_ok, "failure": s.reloads_failed},
            "last_reload": s.last_reload,
            "reload_history": s.reload_history,
            "pods": s.pods.iter().map(|pod| serde_json::json!({
                "namespace": pod.namespace, "name": pod.name, "uid": pod.uid,
                "policy": v.config.policies[pod.policy].name, "cgroup": pod.cgroup,
            })).collect::<Vec<_>>(),
            "top_blocked": s.top_blocked.iter().map(|(p, list)| {
                (p.clone(), list.iter().map(|(d, n)| serde_json::json!({"destination": d, "count": n})).collect::<Vec<_>>())
            }).collect::<BTreeMap<_, _>>(),
        }),
    }
}

impl Daemon {
    pub(super) fn status(&self) -> Response {
        let v = self.versioned.read().expect("lock");
        let packets = self.metrics.kernel.lock().expect("lock").packets(&v.ids);
        let pods = if v.config.kubernetes.enabled {
            let layout = Layout::detect(&v.config.kubernetes, &self.hierarchy.mount);
            kubernetes::placed(&v.config, &layout, &self.cluster_state())
        } else {
            Vec::new()
        };
        render(&View {
            versioned: &v,
            packets,
            bound: &self.bound,
            attached: &self.attached,
            uptime_seconds: self.started.elapsed().as_secs(),
            instance: &self.instance,
            reloads_ok: self.telemetry.reloads_ok.load(Ordering::Relaxed),
            reloads_failed: self.telemetry.reloads_failed.load(Ordering::Relaxed),
            last_reload: &self.last_reload,
            reload_history: &self.reload_history,
            top_blocked: self.telemetry.top_blocked(TOP_BLOCKED),
            pods: &pods,
            sources: &self.telemetry.sources.lock().expect("lock"),
        })
    }
}

/// A source as `status` shows it: prefixes, age, and the last refresh.
fn describe_source(src: &SourceState) -> String {
    let age = |secs: u64| humantime::format_duration(std::time::Duration::from_secs(secs));
    let mut out = format!("{}: {} prefixes", src.source, src.prefixes);
    match src.age_seconds() {
        Some(a) => out.push_str(&format!(", age {}", age(a))),
        None => out.push_str(", file unreadable"),
    }
    if let Some(max) = src.max_age_seconds {
        out.push_str(&format!(" (max {})", age(max)));
        if src.age_seconds().is_some_and(|a| a > max) {
            out.push_str(" STALE");
        }
    }
    if let Some(r) = &src.last_refresh {
        if r.applied {
            out.push_str(&format!(
                "; last refresh +{} -{} prefixes",
                r.added, r.removed
            ));
        } else {
            out.push_str("; last refresh REJECTED (the previous version stays)");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use residency_common::Family;

    use super::*;
    use crate::{config::Config, generations::ByFamily};

    #[test]
    fn renders_policies_cgroups_counts_and_the_last_reload() {
        let config = Config::parse(
            "[[policy]]\nname = \"eu\"\ncgroups = [\"x\"]\nallow = [\"10.0.0.0/8\", \"2001:db8::/32\"]\n\
             [[policy]]\nname = \"audit\"\nmode = \"audit\"\ncgroups = [\"y\"]\n",
            "t.toml",
        )
        .unwrap();
        let mut v = Versioned::initial(config);
        // Room for both families; the audit policy's IPv4 tables did not fit.
        v.table_room = ByFamily { v4: 100, v6: 100 };
        v.tables.v4.policies = vec![0];
        v.tables.v6.policies = vec![0, 1];
        let bound = [BoundCgroup {
            policy: 0,
            path: "/c/x".into(),
            id: 9,
        }];
        let attached = BTreeMap::from([(9, PathBuf::from("/c/x"))]);
        let packets = BTreeMap::from([
            ((0, Verdict::Allowed, Family::Ipv4), 5),
            ((0, Verdict::Blocked, Family::Ipv6), 2),
            ((1, Verdict::Audited, Family::Ipv4), 3),
        ]);
        let r = render(&View {
            versioned: &v,
            packets,
            bound: &bound,
            attached: &attached,
            uptime_seconds: 12,
            instance: std::path::Path::new("/pins/v3/links/1"),
            reloads_ok: 1,
            reloads_failed: 0,
            last_reload: "",
            reload_history: &[],
            top_blocked: BTreeMap::new(),
            pods: &[PlacedPod {
                namespace: "shop".into(),
                name: "api-0".into(),
                uid: "u1".into(),
                policy: 0,
                cgroup: "kubepods/podu1".into(),
            }],
            sources: &[],
        });
        assert!(r.ok);
        assert!(
            r.text
                .contains("generation 1, up 12s, pins /pins/v3/links/1\n"),
            "{}",
            r.text
        );
        assert!(
            r.text.contains("  policy eu mode=enforce ipv4=1 ipv6=1 allowed=5 blocked=2 audited=0\n    cgroup /c/x\n    pod shop/api-0\n"),
            "{}",
            r.text
        );
        assert!(
            r.text.contains(
                "  policy audit mode=audit ipv4=0 ipv6=0 allowed=0 blocked=0 audited=3\n    \
                 lookup tables: none for ipv4 (they did not fit"
            ),
            "{}",
            r.text
        );
        assert_eq!(r.text.matches("lookup tables:").count(), 1, "{}", r.text);
        assert_eq!(r.data["policies"][1]["lookup_tables"]["ipv4"], false);
        assert_eq!(r.data["policies"][1]["lookup_tables"]["ipv6"], true);
        assert!(
            r.text
                .ends_with("attached at 1 cgroup(s); last reload: none\n"),
            "{}",
            r.text
        );
        assert_eq!(r.data["policies"][0]["packets"]["blocked"], 2);
        assert_eq!(
            r.data["policies"][1]["cgroups"].as_array().unwrap().len(),
            0
        );
        assert_eq!(r.data["reloads"]["success"], 1);
        assert_eq!(r.data["policies"][0]["pods"][0], "shop/api-0");
        assert_eq!(r.data["pods"][0]["policy"], "eu");
        assert_eq!(r.data["pods"][0]["cgroup"], "kubepods/podu1");
    }
}
