//! How an event reads in each format: the logfmt line (`RESIDENCY_EGRESS_BLOCK
//! policy=...`), the journal's `RESIDENCY_*` fields, and the JSON object. Sinks pick
//! the form they write.

use std::{
    borrow::Cow,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::model::{BlockEvent, Field, field};

impl BlockEvent {
    /// An address as sinks show it: exact, or its /24 (IPv4) or /48 (IPv6) when
    /// `mask_addresses` is set. Verdicts and metrics never see the mask.
    /// What was refused, for the tally of most blocked destinations: the address as
    /// events show it (masked or not) with protocol and port, the peer of an inbound
    /// attempt, or the socket or option refused.
    pub fn destination(&self) -> String {
        let mut out = String::new();
        self.write_destination(&mut out);
        out
    }

    /// [`BlockEvent::destination`] written into `out` (cleared first): the reader
    /// tallies every event, and reuses one buffer for it.
    pub fn write_destination(&self, out: &mut String) {
        out.clear();
        match self.hook {
            "inbound" => {
                self.write_shown(self.src, out);
                let _ = write!(out, " {} inbound", self.protocol);
            }
            "socket" => {
                let _ = write!(out, "{} socket", self.protocol);
            }
            "bind" => {
                self.write_shown(self.src, out);
                let _ = write!(out, " {} bind", self.protocol);
            }
            "setsockopt" => {
                let _ = write!(out, "{} option", self.option.unwrap_or("unknown"));
            }
            _ => {
                self.write_shown(self.dst, out);
                let _ = write!(out, " {}", self.protocol);
                if self.dst_port != 0 {
                    let _ = write!(out, "/{}", self.dst_port);
                }
            }
        }
    }

    pub fn show(&self, addr: Option<IpAddr>) -> String {
        let mut out = String::new();
        self.write_shown(addr, &mut out);
        out
    }

    /// [`BlockEvent::show`] appended to `out`.
    fn write_shown(&self, addr: Option<IpAddr>, out: &mut String) {
        let _ = match (addr, self.masked) {
            (None, _) => write!(out, "unknown"),
            (Some(a), false) => write!(out, "{a}"),
            (Some(IpAddr::V4(a)), true) => {
                let o = a.octets();
                write!(out, "{}/24", Ipv4Addr::new(o[0], o[1], o[2], 0))
            }
            (Some(IpAddr::V6(a)), true) => {
                let s = a.segments();
                write!(out, "{}/48", Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
            }
        };
    }

    /// Every field, named for the journal and for the short formats, in a fixed order.
    /// The event's own strings are lent, not copied: every sink asks for them, for
    /// every event.
    pub fn fields(&self) -> Vec<(Field, Cow<'_, str>)> {
        let mut f = vec![
            (field("RESIDENCY_EVENT", "event"), self.tag().into()),
            (
                field("RESIDENCY_POLICY", "policy"),
                self.policy.as_str().into(),
            ),
            (field("RESIDENCY_MODE", "mode"), self.mode.into()),
            (
                field("RESIDENCY_PROTO", "proto"),
                self.protocol.as_str().into(),
            ),
            (
                field("RESIDENCY_DST_ADDR", "dst"),
                self.show(self.dst).into(),
            ),
            (
                field("RESIDENCY_DST_PORT", "dport"),
                self.dst_port.to_string().into(),
            ),
            (
                field("RESIDENCY_SRC_ADDR", "src"),
                self.show(self.src).into(),
            ),
            (
                field("RESIDENCY_SRC_PORT", "sport"),
                self.src_port.to_string().into(),
            ),
        ];
        if let Some((t, c)) = self.icmp {
            f.push((
                field("RESIDENCY_ICMP_TYPE", "icmp_type"),
                t.to_string().into(),
            ));
            f.push((
                field("RESIDENCY_ICMP_CODE", "icmp_code"),
                c.to_string().into(),
            ));
        }
        f.push((
            field("RESIDENCY_CGROUP", "cgroup"),
            self.cgroup.as_deref().unwrap_or("unknown").into(),
        ));
        f.push((
            field("RESIDENCY_CGROUP_ID", "cgroup_id"),
            self.cgroup_id.to_string().into(),
        ));
        f.extend(self.workload_fields());
        f.push((field("RESIDENCY_UID", "uid"), self.uid.to_string().into()));
        f.push((field("RESIDENCY_HOOK", "hook"), self.hook.into()));
        if let Some(o) = self.option {
            f.push((field("RESIDENCY_OPTION", "option"), o.into()));
        }
        if self.pid != 0 {
            f.push((field("RESIDENCY_PID", "pid"), self.pid.to_string().into()));
            f.push((field("RESIDENCY_COMM", "comm"), self.comm.as_str().into()));
        }
        f.push((field("RESIDENCY_RULE", "rule"), self.rule.as_str().into()));
        f.push((
            field("RESIDENCY_COUNT", "count"),
            self.count.to_string().into(),
        ));
        if let Some(first) = self.first_seen {
            f.push((
                field("RESIDENCY_FIRST_SEEN", "first_seen"),
                humantime::format_rfc3339_micros(first).to_string().into(),
            ));
            f.push((
                field("RESIDENCY_LAST_SEEN", "last_seen"),
                humantime::format_rfc3339_micros(self.time)
                    .to_string()
                    .into(),
            ));
        }
        f
    }

    /// The unit (`OBJECT_SYSTEMD_UNIT`, which `journalctl -u` matches) and the pod,
    /// where known.
    fn workload_fields(&self) -> Vec<(Field, Cow<'_, str>)> {
        let w = &self.workload;
        let mut f = Vec::new();
        if let Some(u) = &w.unit {
            f.push((field("OBJECT_SYSTEMD_UNIT", "unit"), u.as_str().into()));
        }
        if let Some(p) = &w.pod {
            f.push((
                field("RESIDENCY_K8S_NAMESPACE", "k8s_namespace"),
                p.namespace.as_str().into(),
            ));
            f.push((
                field("RESIDENCY_K8S_POD", "k8s_pod"),
                p.name.as_str().into(),
            ));
            if let Some(c) = &p.container {
                f.push((
                    field("RESIDENCY_K8S_CONTAINER", "k8s_container"),
                    c.as_str().into(),
                ));
            }
        }
        f
    }

    /// [`BlockEvent::json`] written straight into `out`, byte for byte the same
    /// (keys in sorted order, as a `serde_json::Map` keeps them), without building
    /// the map: the `json` sink writes one per event, hundreds of thousands a second
    /// in a storm.
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        use serde::ser::{SerializeMap as _, Serializer as _};
        let time = humantime::format_rfc3339_micros(self.time).to_string();
        let mut entries: Vec<(&'static str, Cow<'_, str>)> = vec![
            (
                "level",
                if self.audit { "notice" } else { "warning" }.into(),
            ),
            ("host", hostname().into()),
            ("time", time.into()),
        ];
        entries.extend(self.fields().into_iter().map(|(k, v)| (k.short, v)));
        // A later value of one key wins, as in the map.
        entries.reverse();
        entries.sort_by_key(|(k, _)| *k);
        entries.dedup_by_key(|(k, _)| *k);
        let mut ser = serde_json::Serializer::new(out);
        let mut map = ser.serialize_map(Some(entries.len()))?;
        for (k, v) in &entries {
            match v.parse::<u64>() {
                Ok(n) if numeric(k) => map.serialize_entry(k, &n)?,
                _ => map.serialize_entry(k, v)?,
            }
        }
        map.end()
    }

    /// The JSON-lines form: every field (numbers as numbers) plus an RFC 3339 time.
    pub fn json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        // What a log collector files an entry under: its severity and the node.
        m.insert(
            "level".into(),
            if self.audit { "notice" } else { "warning" }.into(),
        );
        m.insert("host".into(), hostname().into());
        m.insert(
            "time".into(),
            humantime::format_rfc3339_micros(self.time)
                .to_string()
                .into(),
        );
        for (k, v) in self.fields() {
            let value = match v.parse::<u64>() {
                Ok(n) if numeric(k.short) => serde_json::Value::from(n),
                _ => serde_json::Value::from(v),
            };
            m.insert(k.short.into(), value);
        }
        serde_json::Value::Object(m)
    }

    /// `RESIDENCY_EGRESS_BLOCK` or `RESIDENCY_EGRESS_AUDIT`.
    pub fn tag(&self) -> &'static str {
        if self.audit {
            "RESIDENCY_EGRESS_AUDIT"
        } else {
            "RESIDENCY_EGRESS_BLOCK"
        }
    }

    /// The one-line, logfmt form.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{} policy={} mode={} proto={} dst={} dport={} src={} sport={}",
            self.tag(),
            self.policy,
            self.mode,
            self.protocol,
            self.show(self.dst),
            self.dst_port,
            self.show(self.src),
            self.src_port,
        );
        if let Some((t, c)) = self.icmp {
            s.push_str(&format!(" icmp_type={t} icmp_code={c}"));
        }
        match &self.cgroup {
            // Paths may hold spaces; quote them so the line stays parseable.
            Some(p) if p.contains(' ') || p.contains('"') => s.push_str(&format!(" cgroup={p:?}")),
            Some(p) => s.push_str(&format!(" cgroup={p}")),
            None => s.push_str(" cgroup=unknown"),
        }
        s.push_str(&format!(" cgroup_id={}", self.cgroup_id));
        for (k, v) in self.workload_fields() {
            s.push_str(&format!(" {}={v}", k.short));
        }
        s.push_str(&format!(" uid={} hook={}", self.uid, self.hook));
        if let Some(o) = self.option {
            s.push_str(&format!(" option={o}"));
        }
        if self.pid != 0 {
            s.push_str(&format!(" pid={} comm={:?}", self.pid, self.comm));
        }
        s.push_str(&format!(" rule={}", self.rule));
        if self.count != 1 {
            s.push_str(&format!(" count={}", self.count));
        }
        if let Some(first) = self.first_seen {
            s.push_str(&format!(
                " first_seen={} last_seen={}",
                humantime::format_rfc3339_micros(first),
                humantime::format_rfc3339_micros(self.time)
            ));
        }
        s
    }
}

/// This host's name, read once (`/proc/sys/kernel/hostname`).
pub(crate) fn hostname() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "-".to_owned())
    })
}

/// JSON keys whose values are numbers.
fn numeric(key: &str) -> bool {
    matches!(
        key,
        "dport" | "sport" | "icmp_type" | "icmp_code" | "cgroup_id" | "uid" | "pid" | "count"
    )
}
