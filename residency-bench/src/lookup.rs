//! Section 1b: would a lookup structure of residency's own make the first packet of a
//! flow cheap? Issue 18 names multibit tables in BPF arrays (DPDK's DIR-24-8, poptrie)
//! as the way below what one kernel LPM trie lookup costs. This measures the question
//! before building it into the program: the same IPv4 prefixes in a bare LPM trie and
//! in leaf-pushed tables of 16, 8 and 8 bits ([`Tables`]), each looked up by a program
//! of `residency-bench-ebpf` (`lookup.rs`) that does nothing else, timed through
//! `BPF_PROG_TEST_RUN` beside the empty program, and the tables' memory counted.
//!
//! Before timing, both programs judge a few thousand destinations (random ones, ones
//! inside random prefixes, each prefix's first and last address) and must agree with
//! each other and with [`Tables::lookup`]: the numbers are of a structure that gives
//! the trie's answers.

use std::{fmt::Write as _, net::IpAddr};

use anyhow::{Context as _, ensure};
use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array,
        lpm_trie::{Key, LpmTrie},
    },
    programs::CgroupSkb,
};
use residency_tests::random::Rng;

use crate::{
    allowlist::Allowlist, empty::EmptyProgram, options::Options, prefixes, stats, testrun::test_run,
};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lookup"));

/// A table entry that points at a chunk of the next level (else it is a leaf).
const CHUNK: u32 = 1 << 31;
/// Entries per chunk (8 bits of the address).
const CHUNK_LEN: usize = 256;

/// Leaf-pushed multibit tables of 16, 8 and 8 bits: `l0` has one entry per /16; an
/// entry is 0 (no prefix covers the address), a prefix's value, or [`CHUNK`] | the
/// index of a chunk of the next level in `chunks`.
pub struct Tables {
    pub l0: Vec<u32>,
    pub chunks: Vec<u32>,
}

impl Tables {
    /// Builds the tables of `prefixes` (`(address, length)`, host order), each prefix
    /// valued by its position + 1.
    pub fn build(prefixes: &[(u32, u8)]) -> Tables {
        let mut t = Tables {
            l0: vec![0; 1 << 16],
            chunks: Vec::new(),
        };
        // Shortest first: a longer prefix then overwrites the part of a shorter one it
        // covers, and a chunk made under a leaf starts as copies of it (leaf pushing).
        let mut order: Vec<usize> = (0..prefixes.len()).collect();
        order.sort_by_key(|&i| prefixes[i].1);
        for i in order {
            let (addr, len) = prefixes[i];
            t.paint(addr, len, i as u32 + 1);
        }
        t
    }

    /// The chunk below `entry`: its own, or a new one filled with the leaf it held.
    fn below(&mut self, entry: u32) -> (u32, usize) {
        if entry & CHUNK != 0 {
            return (entry, (entry & !CHUNK) as usize);
        }
        let index = self.chunks.len() / CHUNK_LEN;
        self.chunks.extend(std::iter::repeat_n(entry, CHUNK_LEN));
        (CHUNK | index as u32, index)
    }

    fn paint(&mut self, addr: u32, len: u8, value: u32) {
        let span = |bits: u8| 1usize << (bits - len);
        if len <= 16 {
            let first = (addr >> 16) as usize;
            self.l0[first..first + span(16)].fill(value);
            return;
        }
        let i0 = (addr >> 16) as usize;
        let (entry, c1) = self.below(self.l0[i0]);
        self.l0[i0] = entry;
        let i1 = c1 * CHUNK_LEN + ((addr >> 8) & 0xff) as usize;
        if len <= 24 {
            self.chunks[i1..i1 + span(24)].fill(value);
            return;
        }
        let (entry, c2) = self.below(self.chunks[i1]);
        self.chunks[i1] = entry;
        let i2 = c2 * CHUNK_LEN + (addr & 0xff) as usize;
        self.chunks[i2..i2 + span(32)].fill(value);
    }

    /// What the tables hold for `a` (0: no prefix covers it), as the program reads it.
    pub fn lookup(&self, a: u32) -> u32 {
        let e = self.l0[(a >> 16) as usize];
        if e & CHUNK == 0 {
            return e;
        }
        let e = self.chunks[(e & !CHUNK) as usize * CHUNK_LEN + ((a >> 8) & 0xff) as usize];
        if e & CHUNK == 0 {
            return e;
        }
        self.chunks[(e & !CHUNK) as usize * CHUNK_LEN + (a & 0xff) as usize]
    }

    pub fn chunk_count(&self) -> usize {
        self.chunks.len() / CHUNK_LEN
    }

    /// The BPF arrays' size: 4 bytes per entry.
    pub fn bytes(&self) -> usize {
        (self.l0.len() + self.chunks.len()) * 4
    }
}

/// One prefix set's measurement.
pub struct Row {
    pub set: String,
    pub prefixes: usize,
    pub chunks: usize,
    pub table_bytes: usize,
    /// Destinations both programs judged alike before timing.
    pub checked: usize,
    /// ns per run of each trial: the empty program; the trie and the tables for the
    /// allowed destination section 1 times; and for one inside a prefix longer than /24
    /// (all three levels of the tables).
    pub empty: Vec<f64>,
    pub trie: Vec<f64>,
    pub table: Vec<f64>,
    pub trie_deep: Vec<f64>,
    pub table_deep: Vec<f64>,
}

pub fn run(opts: &Options, allow: &Allowlist) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for n in [10_000, 100_000, 1_000_000] {
        let set = prefixes::ipv4(n);
        let IpAddr::V4(hit) = set.hit else {
            unreachable!("an IPv4 set's hit is IPv4")
        };
        rows.push(measure(
            &format!("synthetic, {}", crate::report::int(n as f64)),
            &parse(&set.cidrs)?,
            u32::from(hit),
            opts,
        )?);
    }
    let mut real = allow.ipv4_cidrs()?;
    real.push(prefixes::V4_TARGET.to_owned());
    // The datapath's receiver, as there.
    let hit = u32::from(std::net::Ipv4Addr::new(198, 18, 0, 2));
    let label = format!("{} (GeoLite2)", allow.label());
    rows.push(measure(&label, &parse(&real)?, hit, opts)?);
    Ok(rows)
}

fn parse(cidrs: &[String]) -> anyhow::Result<Vec<(u32, u8)>> {
    cidrs
        .iter()
        .map(|c| {
            let (a, l) = c.split_once('/').context("a prefix without a length")?;
            let a: std::net::Ipv4Addr = a.parse().with_context(|| format!("prefix {c}"))?;
            let l: u8 = l.parse().with_context(|| format!("prefix {c}"))?;
            ensure!(l <= 32, "prefix {c}: length over 32");
            Ok((
                u32::from(a) & !(u32::MAX.checked_shr(u32::from(l)).unwrap_or(0)),
                l,
            ))
        })
        .collect()
}

fn measure(name: &str, set: &[(u32, u8)], hit: u32, opts: &Options) -> anyhow::Result<Row> {
    eprintln!("bench: lookup prototype, {name}");
    let tables = Tables::build(set);
    let mut ebpf = EbpfLoader::new()
        .map_max_entries("BENCH_TRIE", set.len() as u32)
        .map_max_entries("BENCH_CHUNKS", tables.chunks.len().max(1) as u32)
        .load(OBJECT)
        .context("loading the lookup prototype's object")?;
    for name in ["bench_trie", "bench_table"] {
        let prog: &mut CgroupSkb = ebpf
            .program_mut(name)
            .with_context(|| format!("the object has no {name}"))?
            .try_into()?;
        prog.load().with_context(|| format!("loading {name}"))?;
    }
    fill(&mut ebpf, set, &tables)?;
    let trie: &CgroupSkb = ebpf
        .program("bench_trie")
        .context("bench_trie")?
        .try_into()?;
    let table: &CgroupSkb = ebpf
        .program("bench_table")
        .context("bench_table")?
        .try_into()?;
    let checked = check(trie, table, &tables, set)?;
    let empty = EmptyProgram::load()?;
    let packet = frame(hit);
    let (deep, _) = set
        .iter()
        .find(|(_, len)| *len > 24)
        .context("the set has no prefix longer than /24")?;
    let deep = frame(*deep);
    for p in [&packet, &deep] {
        ensure!(
            test_run(trie, p, 1)?.0 == 1 && test_run(table, p, 1)?.0 == 1,
            "{name}: a timed destination is not covered"
        );
    }
    let cases = [
        (empty.program()?, &packet),
        (trie, &packet),
        (table, &packet),
        (trie, &deep),
        (table, &deep),
    ];
    let mut ns = vec![Vec::with_capacity(opts.trials as usize); cases.len()];
    for _ in 0..opts.trials {
        for (i, (prog, packet)) in cases.iter().enumerate() {
            ns[i].push(test_run(prog, packet, opts.repeat)?.1 as f64);
        }
    }
    let [empty, trie, table, trie_deep, table_deep] =
        <[Vec<f64>; 5]>::try_from(ns).expect("five cases");
    Ok(Row {
        set: name.to_owned(),
        prefixes: set.len(),
        chunks: tables.chunk_count(),
        table_bytes: tables.bytes(),
        checked,
        empty,
        trie,
        table,
        trie_deep,
        table_deep,
    })
}

/// Writes the prefixes into the trie and the tables into the arrays (zero entries are
/// left as the kernel made them).
fn fill(ebpf: &mut Ebpf, set: &[(u32, u8)], tables: &Tables) -> anyhow::Result<()> {
    let mut trie: LpmTrie<_, [u8; 4], u32> =
        LpmTrie::try_from(ebpf.map_mut("BENCH_TRIE").context("BENCH_TRIE")?)?;
    for (i, &(addr, len)) in set.iter().enumerate() {
        trie.insert(
            &Key::new(u32::from(len), addr.to_be_bytes()),
            i as u32 + 1,
            0,
        )
        .context("filling the trie")?;
    }
    for (map, entries) in [("BENCH_L0", &tables.l0), ("BENCH_CHUNKS", &tables.chunks)] {
        let mut array: Array<_, u32> = Array::try_from(ebpf.map_mut(map).context(map)?)?;
        for (i, &v) in entries.iter().enumerate() {
            if v != 0 {
                array
                    .set(i as u32, v, 0)
                    .with_context(|| format!("filling {map}"))?;
            }
        }
    }
    Ok(())
}

/// Both programs' verdicts, and the tables' own, for destinations all over the set:
/// random addresses, random addresses inside random prefixes, and every prefix's
/// first and last address (a sample of them for large sets). The number checked.
fn check(
    trie: &CgroupSkb,
    table: &CgroupSkb,
    tables: &Tables,
    set: &[(u32, u8)],
) -> anyhow::Result<usize> {
    let mut rng = Rng::new(0x100c_0b18 ^ set.len() as u64);
    let mut dsts = Vec::new();
    for _ in 0..1000 {
        dsts.push(rng.below(1 << 32) as u32);
        let (addr, len) = set[rng.below(set.len() as u64) as usize];
        let size = 1u64 << (32 - u32::from(len));
        dsts.push(addr.wrapping_add(rng.below(size) as u32));
        dsts.push(addr);
        dsts.push(addr.wrapping_add((size - 1) as u32));
        // Just outside it, where a neighbour or nothing decides.
        dsts.push(addr.wrapping_add(size as u32));
        dsts.push(addr.wrapping_sub(1));
    }
    for &d in &dsts {
        let packet = frame(d);
        let by_trie = test_run(trie, &packet, 1)?.0;
        let by_table = test_run(table, &packet, 1)?.0;
        let by_tables = u32::from(tables.lookup(d) != 0);
        ensure!(
            by_trie == by_table && by_table == by_tables,
            "{}: trie {by_trie}, tables {by_table}, userspace tables {by_tables}",
            std::net::Ipv4Addr::from(d)
        );
    }
    Ok(dsts.len())
}

/// A UDP frame to `dst` with 64 payload bytes, as section 1 sends.
fn frame(dst: u32) -> Vec<u8> {
    residency_tests::kernel::frame(
        IpAddr::from([198, 18, 0, 1]),
        IpAddr::from(dst.to_be_bytes()),
        17,
        5201,
        64,
    )
}

/// The section's table.
pub fn table(rows: &[Row], s: &mut String) {
    let _ = writeln!(
        s,
        "## 1b. A lookup structure of residency's own? (prototype)\n\n\
         The same IPv4 prefixes in a bare LPM trie (the kernel structure residency's \
         program uses) and in leaf-pushed multibit tables of 16, 8 and 8 bits in BPF \
         arrays, each looked up by a program that does nothing else, timed through \
         `BPF_PROG_TEST_RUN` (median ns per run) beside the empty program, for section \
         1's allowed destination and for one inside a prefix longer than /24 (the \
         tables' three levels). Both programs first judged the destinations of the checked column alike \
         (random ones, inside and just outside random prefixes). Table memory: 4 bytes \
         per entry, 256 KiB for the first level and 1 KiB per chunk, per policy and \
         generation slot.\n\n\
         | set | prefixes | chunks | tables | checked | empty ns | trie ns (× empty) | tables ns (× empty) | > /24: trie | > /24: tables |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for r in rows {
        let e = stats::median(&r.empty);
        let t = stats::median(&r.trie);
        let b = stats::median(&r.table);
        let td = stats::median(&r.trie_deep);
        let bd = stats::median(&r.table_deep);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1} MiB | {} | {e:.0} | {t:.0} ({:.1}×) | {b:.0} ({:.1}×) \
             | {td:.0} ({:.1}×) | {bd:.0} ({:.1}×) |",
            r.set,
            crate::report::int(r.prefixes as f64),
            crate::report::int(r.chunks as f64),
            r.table_bytes as f64 / (1024.0 * 1024.0),
            crate::report::int(r.checked as f64),
            t / e,
            b / e,
            td / e,
            bd / e,
        );
    }
    s.push('\n');
}
