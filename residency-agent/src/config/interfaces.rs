//! `interfaces`: the interface names a policy lets its workloads bind sockets to.

use toml::Spanned;

use super::{ConfigError, locate::Locator};

/// Interface names as `SO_BINDTODEVICE` takes them: 1 to 15 bytes (`IFNAMSIZ` less
/// the NUL), no `/`, whitespace or NUL (the kernel's `dev_valid_name`), each once.
pub(crate) fn parse(
    at: &Locator<'_>,
    key: &str,
    list: Vec<Spanned<String>>,
) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    for n in list {
        let name = n.get_ref();
        let bad = name.is_empty()
            || name.len() > 15
            || name == "."
            || name == ".."
            || name
                .bytes()
                .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
        if bad {
            return Err(at.error(
                n.span(),
                &format!("{key}.interfaces"),
                &format!("\"{name}\" is not an interface name (1 to 15 characters, no '/', ':' or spaces)"),
            ));
        }
        if out.contains(name) {
            return Err(at.error(
                n.span(),
                &format!("{key}.interfaces"),
                &format!("\"{name}\" is listed twice"),
            ));
        }
        out.push(name.clone());
    }
    Ok(out)
}
