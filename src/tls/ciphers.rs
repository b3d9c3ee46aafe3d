//! Cipher suites by the names operators know: OpenSSL's (`ECDHE-RSA-AES128-
//! GCM-SHA256`, `TLS_AES_256_GCM_SHA384`) mapped to the suites of rustls'
//! `ring` provider, and `CIPHERS SET` lists in OpenSSL's syntax
//! (docs/tls-and-proxy-protocol.md#tls-settings,
//! docs/tls-and-proxy-protocol.md#tls-to-brokers-egress).
//!
//! A list is `:`-separated (`,` and spaces also separate, as in OpenSSL).
//! Each token is a suite name (OpenSSL or IANA), a keyword (`ALL`,
//! `DEFAULT`, `HIGH`), or tags joined by `+` (`ECDHE+AESGCM`), optionally
//! prefixed by `!` (remove for good), `-` (remove) or `+` (move to the end).
//! `@STRENGTH` and `@SECLEVEL=n` are accepted and change nothing. Tags name
//! only TLS 1.2 suites; TLS 1.3 suites are chosen by their names and, as
//! with OpenSSL's cipher list, all stay enabled when the list names none.
//! Families rustls never offers (`aNULL`, `RC4`, `3DES`, `MD5`, CBC-SHA1,
//! ...) may be named, usually excluded, and match nothing. Any other token
//! is an unknown name and the whole list is refused: a typo never silently
//! changes what is offered. Pure functions; no I/O.

use rustls::crypto::ring::cipher_suite as rs;
use rustls::SupportedCipherSuite;

/// One suite rustls offers, with its OpenSSL name and OpenSSL's tags.
struct Entry {
    openssl: &'static str,
    suite: SupportedCipherSuite,
    tags: &'static [&'static str],
}

const TLS12_COMMON: [&str; 4] = ["ALL", "DEFAULT", "HIGH", "TLSv1.2"];

/// In the `ring` provider's preference order: TLS 1.3 first, then TLS 1.2
/// with ECDSA before RSA, AES-256 before AES-128 before ChaCha20.
const TABLE: &[Entry] = &[
    Entry {
        openssl: "TLS_AES_256_GCM_SHA384",
        suite: rs::TLS13_AES_256_GCM_SHA384,
        tags: &[],
    },
    Entry {
        openssl: "TLS_AES_128_GCM_SHA256",
        suite: rs::TLS13_AES_128_GCM_SHA256,
        tags: &[],
    },
    Entry {
        openssl: "TLS_CHACHA20_POLY1305_SHA256",
        suite: rs::TLS13_CHACHA20_POLY1305_SHA256,
        tags: &[],
    },
    Entry {
        openssl: "ECDHE-ECDSA-AES256-GCM-SHA384",
        suite: rs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        tags: &[
            "ECDHE", "EECDH", "kECDHE", "kEECDH", "aECDSA", "ECDSA", "AESGCM", "AES", "AES256",
            "SHA384",
        ],
    },
    Entry {
        openssl: "ECDHE-ECDSA-AES128-GCM-SHA256",
        suite: rs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        tags: &[
            "ECDHE", "EECDH", "kECDHE", "kEECDH", "aECDSA", "ECDSA", "AESGCM", "AES", "AES128",
            "SHA256",
        ],
    },
    Entry {
        openssl: "ECDHE-ECDSA-CHACHA20-POLY1305",
        suite: rs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        tags: &[
            "ECDHE", "EECDH", "kECDHE", "kEECDH", "aECDSA", "ECDSA", "CHACHA20", "SHA256",
        ],
    },
    Entry {
        openssl: "ECDHE-RSA-AES256-GCM-SHA384",
        suite: rs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        tags: &[
            "ECDHE", "EECDH", "kECDHE", "kEECDH", "aRSA", "RSA", "AESGCM", "AES", "AES256",
            "SHA384",
        ],
    },
    Entry {
        openssl: "ECDHE-RSA-AES128-GCM-SHA256",
        suite: rs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        tags: &[
            "ECDHE", "EECDH", "kECDHE", "kEECDH", "aRSA", "RSA", "AESGCM", "AES", "AES128",
            "SHA256",
        ],
    },
    Entry {
        openssl: "ECDHE-RSA-CHACHA20-POLY1305",
        suite: rs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        tags: &[
            "ECDHE", "EECDH", "kECDHE", "kEECDH", "aRSA", "RSA", "CHACHA20", "SHA256",
        ],
    },
];

/// OpenSSL tags of families rustls does not implement: naming them is
/// fine (lists usually exclude them) and selects nothing.
const ABSENT_TAGS: &[&str] = &[
    "aNULL",
    "eNULL",
    "NULL",
    "COMPLEMENTOFDEFAULT",
    "COMPLEMENTOFALL",
    "MD5",
    "RC4",
    "3DES",
    "DES",
    "EXP",
    "EXPORT",
    "EXPORT40",
    "EXPORT56",
    "LOW",
    "MEDIUM",
    "PSK",
    "SRP",
    "DSS",
    "aDSS",
    "DH",
    "DHE",
    "EDH",
    "kDHE",
    "kEDH",
    "kDH",
    "ADH",
    "AECDH",
    "aECDH",
    "kRSA",
    "SEED",
    "IDEA",
    "CAMELLIA",
    "ARIA",
    "SHA1",
    "SHA",
    "CBC",
    "kPSK",
    "kECDHEPSK",
    "kDHEPSK",
    "kRSAPSK",
    "aPSK",
    "GOST",
    "kGOST",
    "aGOST",
    "SSLv3",
    "TLSv1",
    "TLSv1.0",
    "CCM",
    "CCM8",
    "AESCCM",
    "AESCCM8",
];

/// The suites offered when no list was set: every suite of the provider.
pub fn default_suites() -> Vec<SupportedCipherSuite> {
    TABLE.iter().map(|e| e.suite).collect()
}

/// The OpenSSL name of a suite (its IANA name if it is not in the table).
pub fn openssl_name(suite: SupportedCipherSuite) -> String {
    TABLE
        .iter()
        .find(|e| e.suite.suite() == suite.suite())
        .map(|e| e.openssl.to_string())
        .unwrap_or_else(|| suite.suite().as_str().unwrap_or("UNKNOWN").to_string())
}

/// What a `CIPHERS SET` list selects.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CipherListError {
    #[error("Unknown cipher '{0}': rustls offers only the ciphers CIPHERS PRINT lists before any SET (ECDHE with AES-GCM or ChaCha20-Poly1305 for TLS 1.2, and the three TLS 1.3 suites)")]
    Unknown(String),
    #[error("The list selects no cipher that rustls offers")]
    Empty,
}

fn is_tls13(i: usize) -> bool {
    TABLE[i].tags.is_empty()
}

/// The table rows a token (without its prefix) names; `None` when unknown.
fn matching(token: &str) -> Option<Vec<usize>> {
    let by_name = TABLE.iter().position(|e| {
        e.openssl.eq_ignore_ascii_case(token)
            || e.suite
                .suite()
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(token))
    });
    if let Some(i) = by_name {
        return Some(vec![i]);
    }
    let mut rows: Vec<usize> = (0..TABLE.len()).filter(|i| !is_tls13(*i)).collect();
    for tag in token.split('+') {
        if ABSENT_TAGS.contains(&tag) {
            rows.clear();
        } else if TLS12_COMMON.contains(&tag) || TABLE.iter().any(|e| e.tags.contains(&tag)) {
            rows.retain(|i| TLS12_COMMON.contains(&tag) || TABLE[*i].tags.contains(&tag));
        } else {
            return None;
        }
    }
    Some(rows)
}

/// Parses an OpenSSL cipher list into suites in preference order (TLS 1.3
/// first). Unknown tokens are an error; nothing is selected partially.
pub fn parse_list(list: &str) -> Result<Vec<SupportedCipherSuite>, CipherListError> {
    let mut chosen: Vec<usize> = Vec::new();
    let mut banned: Vec<usize> = Vec::new();
    for raw in list.split([':', ',', ' ']).filter(|t| !t.is_empty()) {
        if raw.starts_with('@') {
            continue;
        }
        let (op, token) = match raw.as_bytes()[0] {
            b'!' | b'-' | b'+' => (raw.as_bytes()[0], &raw[1..]),
            _ => (b' ', raw),
        };
        let rows = matching(token).ok_or_else(|| CipherListError::Unknown(token.to_string()))?;
        match op {
            b'!' => {
                chosen.retain(|i| !rows.contains(i));
                banned.extend(&rows);
            }
            b'-' => chosen.retain(|i| !rows.contains(i)),
            b'+' => {
                let moved: Vec<usize> = chosen
                    .iter()
                    .copied()
                    .filter(|i| rows.contains(i))
                    .collect();
                chosen.retain(|i| !rows.contains(i));
                chosen.extend(moved);
            }
            _ => {
                for i in rows {
                    if !chosen.contains(&i) && !banned.contains(&i) {
                        chosen.push(i);
                    }
                }
            }
        }
    }
    // As OpenSSL's cipher list: TLS 1.3 suites not named stay enabled.
    if !chosen.iter().any(|i| is_tls13(*i)) {
        let tls13 = (0..TABLE.len()).filter(|i| is_tls13(*i) && !banned.contains(i));
        chosen.splice(0..0, tls13);
    }
    let (mut v13, v12): (Vec<usize>, Vec<usize>) = chosen.into_iter().partition(|i| is_tls13(*i));
    if v12.is_empty() && v13.is_empty() {
        return Err(CipherListError::Empty);
    }
    v13.extend(v12);
    Ok(v13.into_iter().map(|i| TABLE[i].suite).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &str) -> Vec<String> {
        parse_list(list)
            .unwrap()
            .into_iter()
            .map(openssl_name)
            .collect()
    }

    #[test]
    fn exact_names_keep_their_order_and_tls13_stays() {
        assert_eq!(
            names("ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384"),
            [
                "TLS_AES_256_GCM_SHA384",
                "TLS_AES_128_GCM_SHA256",
                "TLS_CHACHA20_POLY1305_SHA256",
                "ECDHE-RSA-AES128-GCM-SHA256",
                "ECDHE-RSA-AES256-GCM-SHA384"
            ]
        );
        // IANA names work too, in any case.
        assert_eq!(
            names("tls_ecdhe_rsa_with_aes_128_gcm_sha256,TLS_AES_128_GCM_SHA256"),
            ["TLS_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256"]
        );
    }

    #[test]
    fn keywords_tags_and_exclusions() {
        assert_eq!(names("HIGH:!aNULL:!MD5:!RC4").len(), TABLE.len());
        assert_eq!(
            names("ECDHE+AESGCM:!aECDSA"),
            [
                "TLS_AES_256_GCM_SHA384",
                "TLS_AES_128_GCM_SHA256",
                "TLS_CHACHA20_POLY1305_SHA256",
                "ECDHE-RSA-AES256-GCM-SHA384",
                "ECDHE-RSA-AES128-GCM-SHA256"
            ]
        );
        assert_eq!(
            names("ALL:!TLS_CHACHA20_POLY1305_SHA256:!CHACHA20:+AES128:@STRENGTH")[2..],
            [
                "ECDHE-ECDSA-AES256-GCM-SHA384",
                "ECDHE-RSA-AES256-GCM-SHA384",
                "ECDHE-ECDSA-AES128-GCM-SHA256",
                "ECDHE-RSA-AES128-GCM-SHA256"
            ]
        );
        // Only TLS 1.3 named: TLS 1.2 gets nothing, which is allowed.
        assert_eq!(names("TLS_AES_128_GCM_SHA256"), ["TLS_AES_128_GCM_SHA256"]);
    }

    #[test]
    fn unknown_names_are_refused() {
        assert_eq!(
            parse_list("ECDHE-RSA-AES128-GCM-SHA256:AES256-SHA"),
            Err(CipherListError::Unknown("AES256-SHA".into()))
        );
        assert_eq!(
            parse_list("ECDHE-RSA-AES128-GCM-SHA265"),
            Err(CipherListError::Unknown(
                "ECDHE-RSA-AES128-GCM-SHA265".into()
            ))
        );
        assert_eq!(
            parse_list("!FOO"),
            Err(CipherListError::Unknown("FOO".into()))
        );
        assert_eq!(
            parse_list(
                "RC4:!TLS_AES_256_GCM_SHA384:!TLS_AES_128_GCM_SHA256:!TLS_CHACHA20_POLY1305_SHA256"
            ),
            Err(CipherListError::Empty)
        );
    }
}
