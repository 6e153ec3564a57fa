//! The real country databases the tests read, as `cargo xtask setup` installs them
//! from the npm registry: ip-location-db's builds of MaxMind's GeoLite2 Country, the
//! same release as an MMDB file (flat `country_code` schema) and as start,end,country
//! CSV ranges, pinned so that every machine tests against the same data.

use std::path::PathBuf;

/// Where setup unpacks them: `<DIR>/<package>/…`.
pub const DIR: &str = "/usr/local/lib/residency/geoip";

/// The packages, pinned (name@version), and a file each must hold.
pub const PACKAGES: &[(&str, &str)] = &[
    (
        "@ip-location-db/geolite2-country-mmdb@2.3.2026061719",
        "geolite2-country-mmdb/geolite2-country.mmdb",
    ),
    (
        "@ip-location-db/geolite2-country@2.3.2026061719",
        "geolite2-country/geolite2-country-ipv4.csv",
    ),
];

/// The IPv4 and IPv6 GeoLite2 Country database (MMDB).
pub fn mmdb() -> PathBuf {
    PathBuf::from(DIR).join("geolite2-country-mmdb/geolite2-country.mmdb")
}

/// The same release's ranges as CSV: (IPv4 file, IPv6 file).
pub fn csv() -> (PathBuf, PathBuf) {
    let d = PathBuf::from(DIR).join("geolite2-country");
    (
        d.join("geolite2-country-ipv4.csv"),
        d.join("geolite2-country-ipv6.csv"),
    )
}
