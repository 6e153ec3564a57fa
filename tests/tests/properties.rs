//! Property tests: on random policies, the kernel's verdicts are exactly the agent's
//! offline `decide` of the same compiled policy — the packet program through
//! `BPF_PROG_TEST_RUN` across versions (compile by sorted prefixes, the generation
//! swap, special destinations, port rules, IPv4-mapped destinations; with the IPv4
//! and IPv6 lookup tables, without them, and with versions of each kind in one slot),
//! and the sendmsg hook through real `sendto()` calls, twice per destination, so that the second call
//! can take the verdict the first one's packet left in the cache; and packets judged
//! while versions are swapped under them, each by one version or the other. Seeded
//! (`residency_tests::random`); every failure names the seed, the destination and the
//! policy. Needs root (BPF, cgroups, namespaces).

use std::{io::Write as _, net::IpAddr, process::Stdio, sync::Arc};

use residency_agent::{
    config::Config,
    generations::{ByFamily, Generations},
    policy::{Target, compile, decide},
};
use residency_tests::{
    Sandbox, agent_binary, kernel, py,
    random::{RandomPolicy, Rng},
    require_root, sh,
};

const PASS: u32 = 1;

/// A frame to `dst` from an address of the sandbox's kind, 8 transport bytes.
fn packet(dst: IpAddr, protocol: u8, dport: u16) -> Vec<u8> {
    let src = match dst {
        IpAddr::V4(_) => IpAddr::from([10, 255, 255, 1]),
        IpAddr::V6(_) => "fd00::1".parse().unwrap(),
    };
    kernel::frame(src, dst, protocol, dport, 0)
}

#[test]
fn the_packet_program_judges_random_policies_as_decide_does() {
    if !require_root() {
        return;
    }
    // The lookup tables (the default room), none (the trie alone), and too little
    // room for some versions' tables, so that versions with and without tables follow
    // each other in one slot.
    const DEFAULT: u32 = residency_common::DEFAULT_TABLE_CHUNKS;
    for (v4, v6, seed) in [
        (DEFAULT, DEFAULT, 0x5eed_0018),
        (0, 0, 0x5eed_0019),
        (34, 100, 0x5eed_001a),
    ] {
        judge_random_versions(ByFamily { v4, v6 }, seed);
    }
}

fn judge_random_versions(tables: ByFamily<u32>, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut loaded = kernel::load_private_tables(1 << 16, tables).unwrap();
    let bound = [kernel::bind_own_cgroup(0).unwrap()];
    let mut generations = Generations::new(loaded.take_policy_maps().unwrap()).unwrap();
    let mut judged = 0;
    let mut with_tables = ByFamily { v4: 0, v6: 0 };
    // Versions one after another: every swap must take effect at once, whatever the
    // cache holds from the version before.
    for version in 0..6 {
        let policy = RandomPolicy::new(&mut rng, 60);
        let text = policy.toml("random", "x");
        let config = Arc::new(Config::parse(&text, "random.toml").unwrap());
        loaded.configure(&config).unwrap();
        let applied = generations.apply(&config, &bound).unwrap();
        with_tables.v4 += applied.tables.v4.policies.len();
        with_tables.v6 += applied.tables.v6.policies.len();
        // Fresh maps start at epoch 0; each version is one epoch on.
        let slot = residency_common::slot_of(applied.generation as u32);
        let rules = compile(&config, &applied.ids, slot).unwrap();
        for _ in 0..300 {
            let (addr, port) = policy.target(&mut rng, true);
            let protocol = if rng.chance(70) { 17 } else { 6 };
            let (want, rule) = decide(
                &rules,
                slot,
                applied.ids[0],
                &Target {
                    addr,
                    protocol: Some(protocol),
                    port: Some(port),
                },
            );
            let data = packet(addr, protocol, port);
            // Twice: the first judged from the trie, the second may be a cache hit.
            for run in 0..2 {
                let got = kernel::run_egress(&mut loaded, &data).unwrap() == PASS;
                assert_eq!(
                    got, want,
                    "seed {seed:#x}, version {version}, run {run}: {addr} protocol {protocol} \
                     port {port}: kernel {got}, decide {want} (rule {rule})\n{text}"
                );
            }
            judged += 1;
        }
    }
    assert_eq!(judged, 6 * 300);
    for (family, room, with) in [
        ("IPv4", tables.v4, with_tables.v4),
        ("IPv6", tables.v6, with_tables.v6),
    ] {
        match room {
            0 => assert_eq!(with, 0, "{family} tables written with no room for them"),
            residency_common::DEFAULT_TABLE_CHUNKS => {
                assert_eq!(with, 6, "a version judged without its {family} tables")
            }
            _ => assert!(
                0 < with && with < 6,
                "{with} of 6 versions' {family} tables fit in {room} chunks: the test no \
                 longer mixes versions with and without them"
            ),
        }
    }
}

/// A version whose tables do not fit must not be judged by the tables an earlier
/// version left in the same slot: its root is cleared, and the trie judges.
#[test]
fn a_version_without_tables_is_not_judged_by_an_older_versions_tables() {
    if !require_root() {
        return;
    }
    let small = "[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\nallow = [\"10.0.0.0/8\"]\n";
    // Two hundred /24s in as many /16s: far more chunks than the room below.
    let spread: Vec<String> = (0..200).map(|i| format!("\"11.{i}.7.0/24\"")).collect();
    let large = format!(
        "[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\nallow = [{}]\n",
        spread.join(", ")
    );
    let mut loaded = kernel::load_private_with(1 << 16, 64).unwrap();
    let bound = [kernel::bind_own_cgroup(0).unwrap()];
    let mut generations = Generations::new(loaded.take_policy_maps().unwrap()).unwrap();
    let in_ten = packet("10.1.2.3".parse().unwrap(), 17, 53);
    let in_eleven = packet("11.5.7.9".parse().unwrap(), 17, 53);
    // Slot 1, then slot 0, then slot 1 again.
    for (version, text, tables, ten, eleven) in [
        (1, small, 1, true, false),
        (2, small, 1, true, false),
        (3, large.as_str(), 0, false, true),
    ] {
        let config = Arc::new(Config::parse(text, "p.toml").unwrap());
        loaded.configure(&config).unwrap();
        let applied = generations.apply(&config, &bound).unwrap();
        assert_eq!(
            applied.tables.v4.policies.len(),
            tables,
            "version {version}: policies with tables"
        );
        for (data, want, name) in [(&in_ten, ten, "10.1.2.3"), (&in_eleven, eleven, "11.5.7.9")] {
            let got = kernel::run_egress(&mut loaded, data).unwrap() == PASS;
            assert_eq!(got, want, "version {version}: {name}");
        }
    }
}

/// The map `name` the loaded egress program uses, opened by its id (the test's maps are
/// pinned nowhere).
fn program_map(loaded: &residency_agent::kernel::Loaded, name: &str) -> aya::maps::Map {
    let ids = loaded
        .ebpf
        .program(residency_common::PROGRAM_EGRESS)
        .unwrap()
        .info()
        .unwrap()
        .map_ids()
        .unwrap()
        .unwrap();
    let id = ids
        .into_iter()
        .find(|id| {
            aya::maps::MapInfo::from_id(*id).is_ok_and(|info| info.name_as_str() == Some(name))
        })
        .unwrap_or_else(|| panic!("the egress program uses no map {name}"));
    aya::maps::Map::Array(aya::maps::MapData::from_id(id).unwrap())
}

/// The lookup tables are read only under the epoch they were written for: an agent
/// that knows nothing of them (an older one, after a downgrade) changes the epoch
/// alone, and what this agent left in the tables is never followed after that.
#[test]
fn tables_are_read_only_under_the_epoch_they_were_written_for() {
    if !require_root() {
        return;
    }
    let text = "[agent]\nverdict_cache = false\n\n[[policy]]\nname = \"p\"\n\
                cgroups = [\"x\"]\nallow = [\"10.0.0.0/8\"]\n";
    let config = Arc::new(Config::parse(text, "p.toml").unwrap());
    let mut loaded = kernel::load_private(1 << 16).unwrap();
    loaded.configure(&config).unwrap();
    let bound = [kernel::bind_own_cgroup(0).unwrap()];
    let mut generations = Generations::new(loaded.take_policy_maps().unwrap()).unwrap();
    let applied = generations.apply(&config, &bound).unwrap();
    assert_eq!(
        applied.tables.v4.policies.len(),
        1,
        "the policy has no IPv4 tables"
    );
    let inside = packet("10.1.2.3".parse().unwrap(), 17, 53);
    assert_eq!(kernel::run_egress(&mut loaded, &inside).unwrap(), PASS);

    let mut active: aya::maps::Array<_, u32> =
        program_map(&loaded, "RES_ACTIVE").try_into().unwrap();
    let roots: aya::maps::Array<_, u32> =
        program_map(&loaded, "RES_TABLE_ROOTS").try_into().unwrap();
    let mut chunks: aya::maps::Array<_, residency_common::TableChunk> =
        program_map(&loaded, "RES_TABLE_V4").try_into().unwrap();
    let epoch = active.get(&0, 0).unwrap();
    let slot = residency_common::slot_of(epoch);
    let root = roots
        .get(&(slot * residency_common::MAX_POLICIES + applied.ids[0]), 0)
        .unwrap();
    assert_ne!(root, 0, "the policy's tables have no root");
    // The policy's first-level chunk made to refuse everything (an entry of 0: no
    // prefix covers the address): the tables are what judges 10.1.2.3 now.
    chunks.set(root - 1, [0; 256], 0).unwrap();
    assert_eq!(
        kernel::run_egress(&mut loaded, &inside).unwrap(),
        0,
        "the tables were not read under the epoch they were written for"
    );
    // The epoch changed by an agent that does not know the tables (same slot, as for a
    // cgroup bound): the trie judges again, whatever the tables hold.
    active.set(0, epoch.wrapping_add(2), 0).unwrap();
    assert_eq!(
        kernel::run_egress(&mut loaded, &inside).unwrap(),
        PASS,
        "the tables were read under an epoch they were not written for"
    );
}

const AGENT: &str = r#"
[agent]
pin_path = "{pins}"
metrics_address = "{metrics}"

[events]
sinks = ["text"]
aggregate_window_ms = 0
"#;

#[test]
fn sendto_calls_are_judged_as_decide_does_first_and_from_the_cache() {
    if !require_root() {
        return;
    }
    let bin = agent_binary();
    let mut sb = Sandbox::new(&[]).unwrap();
    let app = sb.cgroup("app").unwrap();
    // Somewhere for every allowed datagram to go: a peer namespace of the sandbox's
    // own, which forwards nothing, behind the default routes.
    let peer = sb
        .add_peer("sink0", &["192.0.2.1/24"], &["192.0.2.2/24"])
        .unwrap();
    for (ns, args) in [
        (
            &peer,
            &["addr", "add", "fd00::2/64", "dev", "sink0", "nodad"][..],
        ),
        (
            &sb.netns,
            &["addr", "add", "fd00::1/64", "dev", "sink0", "nodad"],
        ),
        (&sb.netns, &["route", "add", "default", "via", "192.0.2.2"]),
        (
            &sb.netns,
            &["-6", "route", "add", "default", "via", "fd00::2"],
        ),
        (&sb.netns, &["route", "add", "224.0.0.0/4", "dev", "sink0"]),
    ] {
        sh(std::process::Command::new("ip").args(["-n", ns]).args(args)).unwrap();
    }
    let seed = 0x5eed_5e4d;
    let mut rng = Rng::new(seed);
    let policy = RandomPolicy::new(&mut rng, 80);
    let config = sb.write_config(
        "residency.toml",
        &format!("{AGENT}\n{}", policy.toml("random", "{cg}/app")),
    );
    sb.start_agent(&bin, &config).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    let parsed = Config::parse(&text, "random.toml").unwrap();
    let rules = compile(&parsed, &[0], 0).unwrap();

    let targets: Vec<(IpAddr, u16)> = (0..600).map(|_| policy.target(&mut rng, true)).collect();
    let mut child = sb
        .command(Some(&app), "python3", &["-c", py::SENDTO])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = String::new();
    for (addr, port) in &targets {
        input.push_str(&format!("{addr} {port}\n"));
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the sender failed");
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), targets.len());
    let (mut allowed, mut refused) = (0, 0);
    for ((addr, port), line) in targets.iter().zip(&lines) {
        // A socket call judges an IPv4-mapped destination as the IPv4 host it sends to.
        let judged = match addr {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(*addr, IpAddr::V4),
            IpAddr::V4(_) => *addr,
        };
        let (want, rule) = decide(
            &rules,
            0,
            0,
            &Target {
                addr: judged,
                protocol: Some(17),
                port: Some(*port),
            },
        );
        let expected = if want { "0 0" } else { "1 1" };
        assert_eq!(
            line, expected,
            "seed {seed:#x}: sendto {addr} port {port} (errno first, second): decide says \
             {want} (rule {rule})\n{text}"
        );
        if want {
            allowed += 1;
        } else {
            refused += 1;
        }
    }
    // Both verdicts were exercised, not only one.
    assert!(
        allowed > 50 && refused > 50,
        "{allowed} allowed, {refused} refused"
    );
}

#[test]
fn verdicts_during_swaps_are_one_version_or_the_other_never_a_mix() {
    if !require_root() {
        return;
    }
    let seed = 0x5eed_7ace;
    let mut rng = Rng::new(seed);
    let policies = [
        RandomPolicy::new(&mut rng, 60),
        RandomPolicy::new(&mut rng, 60),
    ];
    let configs = policies
        .each_ref()
        .map(|p| Arc::new(Config::parse(&p.toml("random", "x"), "random.toml").unwrap()));
    let mut loaded = kernel::load_private(1 << 16).unwrap();
    loaded.configure(&configs[0]).unwrap();
    let bound = [kernel::bind_own_cgroup(0).unwrap()];
    let mut generations = Generations::new(loaded.take_policy_maps().unwrap()).unwrap();
    let applied = generations.apply(&configs[0], &bound).unwrap();
    assert_eq!(
        applied.tables.v4.policies.len(),
        1,
        "the policy has no IPv4 tables"
    );
    assert_eq!(
        applied.tables.v6.policies.len(),
        1,
        "the policy has no IPv6 tables"
    );
    let ids = applied.ids;
    // Both versions are one policy, one name: one id. Compiled for one slot here, so
    // the offline verdicts compare by that slot's scope.
    let rules = configs.each_ref().map(|c| compile(c, &ids, 0).unwrap());
    let targets: Vec<(IpAddr, u8, u16, [bool; 2])> = (0..400)
        .map(|i| {
            let (addr, port) = policies[i % 2].target(&mut rng, true);
            let protocol = if rng.chance(70) { 17 } else { 6 };
            let t = Target {
                addr,
                protocol: Some(protocol),
                port: Some(port),
            };
            let want = [0, 1].map(|v| decide(&rules[v], 0, ids[0], &t).0);
            (addr, protocol, port, want)
        })
        .collect();
    let differing = targets.iter().filter(|t| t.3[0] != t.3[1]).count();
    assert!(
        differing > 40,
        "only {differing} destinations tell the versions apart"
    );

    let swapping = std::sync::atomic::AtomicBool::new(true);
    // The swaps start once the packets are being judged.
    let judging = std::sync::atomic::AtomicBool::new(false);
    // How often a destination that tells them apart was judged by each version.
    let mut seen = [0usize; 2];
    std::thread::scope(|s| {
        s.spawn(|| {
            while !judging.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::yield_now();
            }
            for i in 1..=40 {
                generations.apply(&configs[i % 2], &bound).unwrap();
            }
            swapping.store(false, std::sync::atomic::Ordering::SeqCst);
        });
        while swapping.load(std::sync::atomic::Ordering::SeqCst) {
            for (addr, protocol, port, want) in &targets {
                let data = packet(*addr, *protocol, *port);
                let got = kernel::run_egress(&mut loaded, &data).unwrap() == PASS;
                assert!(
                    want.contains(&got),
                    "seed {seed:#x}: {addr} protocol {protocol} port {port} judged {got}, \
                     which neither version gives"
                );
                if want[0] != want[1] {
                    seen[usize::from(got != want[0])] += 1;
                }
            }
            judging.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    assert!(
        seen[0] > 0 && seen[1] > 0,
        "the swaps were not seen by the packets: {seen:?}"
    );
    // The last version applied (the 40th, the first policy) alone decides now.
    for (addr, protocol, port, want) in &targets {
        let data = packet(*addr, *protocol, *port);
        let got = kernel::run_egress(&mut loaded, &data).unwrap() == PASS;
        assert_eq!(got, want[0], "seed {seed:#x}: {addr} after the last swap");
    }
}
