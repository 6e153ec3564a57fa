//! Where the running kernel keeps what the source check reads
//! (`residency_common::KernelLayout`): field offsets found in the kernel's BTF
//! (`/sys/kernel/btf/vmlinux`), since the programs have no kernel types of their own.

use btf_rs::{Btf, Type};
use residency_common::{KernelLayout, LAYOUT_KNOWN};

/// The kernel's BTF, as the kernel publishes it.
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Why the layout could not be found; the source check is then off.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("reading {VMLINUX_BTF}: {0}")]
    Btf(#[from] btf_rs::Error),
    #[error("the kernel's BTF has no {0}")]
    Missing(String),
}

/// Reads the layout of the running kernel.
pub fn read() -> Result<KernelLayout, LayoutError> {
    // Read whole first: parsed from the file, the reader seeks (one system call each)
    // some 100,000 times.
    let bytes = std::fs::read(VMLINUX_BTF).map_err(|e| LayoutError::Btf(e.into()))?;
    let btf = Btf::from_bytes(&bytes)?;
    let sock_net = offset(&btf, "sock_common", &["skc_net"])?;
    let nonlocal_v4 = offset(&btf, "net", &["ipv4", "sysctl_ip_nonlocal_bind"])?;
    let nonlocal_v6 = offset(&btf, "net", &["ipv6", "sysctl", "ip_nonlocal_bind"])?;
    let inet_flags = offset(&btf, "inet_sock", &["inet_flags"])?;
    let net_inum = offset(&btf, "net", &["ns", "inum"])?;
    let sock_addr_t_ctx = offset(&btf, "bpf_sock_addr_kern", &["t_ctx"])?;
    let delta = |from: u32, to: u32| to as i32 - from as i32;
    let oif_from_t_ctx_v4 = delta(
        offset(&btf, "ipcm_cookie", &["addr"])?,
        offset(&btf, "ipcm_cookie", &["oif"])?,
    );
    let oif_from_t_ctx_v6 = delta(
        offset(&btf, "flowi6", &["saddr"])?,
        offset(&btf, "flowi6", &["__fl_common", "flowic_oif"])?,
    );
    let freebind = enumerator(&btf, "INET_FLAGS_FREEBIND")?;
    let transparent = enumerator(&btf, "INET_FLAGS_TRANSPARENT")?;
    let hdrincl = enumerator(&btf, "INET_FLAGS_HDRINCL")?;
    Ok(KernelLayout {
        // `struct sock` starts with its `struct sock_common`, and `possible_net_t`
        // holds just the pointer.
        sock_net,
        nonlocal_v4,
        nonlocal_v6,
        inet_flags,
        any_source: (1 << freebind) | (1 << transparent) | (1 << hdrincl),
        flags: LAYOUT_KNOWN,
        net_inum,
        sock_addr_t_ctx,
        oif_from_t_ctx_v4,
        oif_from_t_ctx_v6,
        skb_refdst: offset(&btf, "sk_buff", &["_skb_refdst"])?,
        dst_uncached: offset(&btf, "dst_entry", &["rt_uncached_list"])?,
        rt_type: offset(&btf, "rtable", &["rt_type"])?,
        rt_gw_family: offset(&btf, "rtable", &["rt_gw_family"])?,
        net_cookie: offset(&btf, "net", &["net_cookie"])?,
        net_dev_index_head: offset(&btf, "net", &["dev_index_head"])?,
        dev_index_hlist: offset(&btf, "net_device", &["index_hlist"])?,
        dev_ifindex: offset(&btf, "net_device", &["ifindex"])?,
        dev_name: offset(&btf, "net_device", &["name"])?,
        _pad: 0,
    })
}

/// The byte offset of the member reached by `path` from struct `root`, looking
/// through anonymous structs and unions on the way.
fn offset(btf: &Btf, root: &str, path: &[&str]) -> Result<u32, LayoutError> {
    let missing = || LayoutError::Missing(format!("struct {root} member {}", path.join(".")));
    let mut ty = btf
        .resolve_types_by_name(root)?
        .into_iter()
        .find(|t| matches!(t, Type::Struct(_)))
        .ok_or_else(missing)?;
    let mut bits = 0;
    for name in path {
        let (at, next) = member(btf, &ty, name, 0)?.ok_or_else(missing)?;
        bits += at;
        ty = next;
    }
    Ok(bits / 8)
}

/// Member `name` of struct or union `ty`, at `depth` anonymous levels down: its bit
/// offset and its type with typedefs and qualifiers looked through.
fn member(btf: &Btf, ty: &Type, name: &str, depth: u8) -> Result<Option<(u32, Type)>, LayoutError> {
    let (Type::Struct(s) | Type::Union(s)) = ty else {
        return Ok(None);
    };
    for m in &s.members {
        let m_name = btf.resolve_name(m)?;
        let m_type = plain(btf, btf.resolve_chained_type(m)?)?;
        if m_name == name {
            return Ok(Some((m.bit_offset(), m_type)));
        }
        if m_name.is_empty()
            && depth < 4
            && let Some((at, t)) = member(btf, &m_type, name, depth + 1)?
        {
            return Ok(Some((m.bit_offset() + at, t)));
        }
    }
    Ok(None)
}

/// `ty` with typedefs and qualifiers resolved away.
fn plain(btf: &Btf, mut ty: Type) -> Result<Type, LayoutError> {
    while let Type::Typedef(_) | Type::Const(_) | Type::Volatile(_) | Type::Restrict(_) = ty {
        let Some(inner) = ty.as_btf_type() else { break };
        ty = btf.resolve_chained_type(inner)?;
    }
    Ok(ty)
}

/// The value of enumerator `name`, found among the kernel's enums.
fn enumerator(btf: &Btf, name: &str) -> Result<u32, LayoutError> {
    use fallible_iterator::FallibleIterator as _;
    let mut types = btf.type_iter();
    while let Some(ty) = types.next()? {
        if let Type::Enum(e) = &ty {
            for m in &e.members {
                if btf.resolve_name(m)? == name {
                    return Ok(m.val());
                }
            }
        }
    }
    Err(LayoutError::Missing(format!("enumerator {name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The offsets of the kernel these tests run on, as `bpftool btf dump` shows them
    /// for Linux 6.18 (a kernel whose BTF differs still gives plausible values).
    #[test]
    fn reads_this_kernel() {
        let l = read().expect("this kernel publishes BTF");
        assert_eq!(l.flags, LAYOUT_KNOWN);
        assert!(l.sock_net > 0 && l.sock_net < 136, "{l:?}");
        assert!(l.nonlocal_v4 > 0 && l.nonlocal_v6 > l.nonlocal_v4, "{l:?}");
        assert!(l.inet_flags > 136, "{l:?}");
        assert_eq!(l.any_source.count_ones(), 3, "{l:?}");
    }
}
