//! Countries as residency rules name them: every ISO 3166-1 alpha-2 code with its
//! continent, and the named groups (`EU`, `EEA`, `EFTA`), kept here and nowhere else.
//!
//! Continents are GeoNames' seven codes (AF, AN, AS, EU, NA, OC, SA), as its
//! `countryInfo.txt` assigns them — the assignment MaxMind's `continent.code` follows —
//! so a continent selects the same countries whichever database schema is read. `XK`
//! (Kosovo, a user-assigned code that GeoNames and MaxMind use) is included.

/// Every country code by continent (GeoNames `countryInfo.txt`, column "Continent").
const CONTINENTS: &[(&str, &[&str])] = &[
    (
        "AF",
        &[
            "AO", "BF", "BI", "BJ", "BW", "CD", "CF", "CG", "CI", "CM", "CV", "DJ", "DZ", "EG",
            "EH", "ER", "ET", "GA", "GH", "GM", "GN", "GQ", "GW", "KE", "KM", "LR", "LS", "LY",
            "MA", "MG", "ML", "MR", "MU", "MW", "MZ", "NA", "NE", "NG", "RE", "RW", "SC", "SD",
            "SH", "SL", "SN", "SO", "SS", "ST", "SZ", "TD", "TG", "TN", "TZ", "UG", "YT", "ZA",
            "ZM", "ZW",
        ],
    ),
    ("AN", &["AQ", "BV", "GS", "HM", "TF"]),
    (
        "AS",
        &[
            "AE", "AF", "AM", "AZ", "BD", "BH", "BN", "BT", "CC", "CN", "CX", "GE", "HK", "ID",
            "IL", "IN", "IO", "IQ", "IR", "JO", "JP", "KG", "KH", "KP", "KR", "KW", "KZ", "LA",
            "LB", "LK", "MM", "MN", "MO", "MV", "MY", "NP", "OM", "PH", "PK", "PS", "QA", "SA",
            "SG", "SY", "TH", "TJ", "TM", "TR", "TW", "UZ", "VN", "YE",
        ],
    ),
    (
        "EU",
        &[
            "AD", "AL", "AT", "AX", "BA", "BE", "BG", "BY", "CH", "CY", "CZ", "DE", "DK", "EE",
            "ES", "FI", "FO", "FR", "GB", "GG", "GI", "GR", "HR", "HU", "IE", "IM", "IS", "IT",
            "JE", "LI", "LT", "LU", "LV", "MC", "MD", "ME", "MK", "MT", "NL", "NO", "PL", "PT",
            "RO", "RS", "RU", "SE", "SI", "SJ", "SK", "SM", "UA", "VA", "XK",
        ],
    ),
    (
        "NA",
        &[
            "AG", "AI", "AW", "BB", "BL", "BM", "BQ", "BS", "BZ", "CA", "CR", "CU", "CW", "DM",
            "DO", "GD", "GL", "GP", "GT", "HN", "HT", "JM", "KN", "KY", "LC", "MF", "MQ", "MS",
            "MX", "NI", "PA", "PM", "PR", "SV", "SX", "TC", "TT", "US", "VC", "VG", "VI",
        ],
    ),
    (
        "OC",
        &[
            "AS", "AU", "CK", "FJ", "FM", "GU", "KI", "MH", "MP", "NC", "NF", "NR", "NU", "NZ",
            "PF", "PG", "PN", "PW", "SB", "TK", "TL", "TO", "TV", "UM", "VU", "WF", "WS",
        ],
    ),
    (
        "SA",
        &[
            "AR", "BO", "BR", "CL", "CO", "EC", "FK", "GF", "GY", "PE", "PY", "SR", "UY", "VE",
        ],
    ),
];

/// The European Union's 27 member states, as listed by the EU itself
/// (<https://european-union.europa.eu/principles-countries-history/eu-countries_en>,
/// since 1 February 2020). Greece is `GR` in ISO 3166-1 (the EU writes `EL`).
const EU: &[&str] = &[
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT", "LV",
    "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
];

/// The European Free Trade Association (<https://www.efta.int/about-efta/efta-member-states>).
const EFTA: &[&str] = &["IS", "LI", "NO", "CH"];

/// The European Economic Area: the EU and the EFTA states that are party to the EEA
/// Agreement, which Switzerland is not (<https://www.efta.int/eea>).
const EEA_NON_EU: &[&str] = &["IS", "LI", "NO"];

/// The names `groups = [...]` accepts.
pub const GROUPS: &[&str] = &["EU", "EEA", "EFTA"];

/// The countries of group `name`, or `None` for a name that is not one.
pub fn group(name: &str) -> Option<Vec<&'static str>> {
    match name {
        "EU" => Some(EU.to_vec()),
        "EEA" => Some(EU.iter().chain(EEA_NON_EU).copied().collect()),
        "EFTA" => Some(EFTA.to_vec()),
        _ => None,
    }
}

/// The countries of continent `code`, or `None` for a code that is not one.
pub fn continent(code: &str) -> Option<&'static [&'static str]> {
    CONTINENTS.iter().find(|(c, _)| *c == code).map(|(_, l)| *l)
}

/// Whether `code` is an ISO 3166-1 alpha-2 country code (or `XK`).
pub fn is_country(code: &str) -> bool {
    CONTINENTS.iter().any(|(_, l)| l.contains(&code))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_iso_3166_code_has_one_continent_and_the_groups_are_countries() {
        let all: Vec<&str> = CONTINENTS
            .iter()
            .flat_map(|(_, l)| l.iter().copied())
            .collect();
        let unique: BTreeSet<&str> = all.iter().copied().collect();
        assert_eq!(all.len(), unique.len(), "a country on two continents");
        // Debian's iso-codes (installed by `cargo xtask setup`) is the independent list.
        let iso: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string("/usr/share/iso-codes/json/iso_3166-1.json")
                .expect("iso-codes is installed by `cargo xtask setup`"),
        )
        .unwrap();
        let mut official: BTreeSet<&str> = iso["3166-1"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["alpha_2"].as_str().unwrap())
            .collect();
        official.insert("XK");
        assert_eq!(unique, official);
        for g in GROUPS {
            for c in group(g).unwrap() {
                assert!(is_country(c), "{g}: {c}");
            }
        }
        assert_eq!(group("EU").unwrap().len(), 27);
        assert_eq!(group("EEA").unwrap().len(), 30);
        assert!(!group("EEA").unwrap().contains(&"CH"));
    }
}
