//! Seed 000's device pairing: request and response bodies, and the code alphabet.
//!
//! Codes are 8 characters from an alphabet without look-alikes (no 0/O, 1/I/L), shown as
//! `XXXX-XXXX`, accepted in any case, with or without the dash.

use serde::{Deserialize, Serialize};

/// Characters a pairing code is drawn from: 31 symbols, none easily confused with another.
pub const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
/// Number of symbols in a code.
pub const CODE_LEN: usize = 8;
/// How long a code stays valid, in seconds.
pub const CODE_TTL_SECS: i64 = 300;

/// `POST /api/device-codes` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceCodeRequest {
    pub host_id: String,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub agent_version: Option<String>,
}

/// `201` answer to `POST /api/device-codes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceCodeResponse {
    /// `XXXX-XXXX`.
    pub code: String,
    /// RFC 3339.
    pub expires_at: String,
}

/// `200` answer to `GET /api/device-token?code=` once the code is approved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceTokenResponse {
    pub token: String,
    pub device_id: String,
}

/// Normalises a user-typed code: upper case, dash and spaces removed. `None` if it cannot be
/// a code at all (wrong length or a character outside the alphabet).
pub fn normalize_code(input: &str) -> Option<String> {
    let s: String = input
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if s.len() != CODE_LEN || !s.bytes().all(|b| CODE_ALPHABET.contains(&b)) {
        return None;
    }
    Some(s)
}

/// Formats a normalised code as `XXXX-XXXX`.
pub fn display_code(normalized: &str) -> String {
    if normalized.len() == CODE_LEN {
        format!("{}-{}", &normalized[..4], &normalized[4..])
    } else {
        normalized.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_normalise_in_any_case_with_or_without_dash() {
        assert_eq!(normalize_code("abcd-efgh").as_deref(), Some("ABCDEFGH"));
        assert_eq!(normalize_code("ABCDEFGH").as_deref(), Some("ABCDEFGH"));
        assert_eq!(normalize_code(" abcd efgh ").as_deref(), Some("ABCDEFGH"));
        assert_eq!(
            normalize_code("ABCD-EFG0"),
            None,
            "0 is not in the alphabet"
        );
        assert_eq!(normalize_code("ABC"), None);
        assert_eq!(display_code("ABCDEFGH"), "ABCD-EFGH");
    }

    #[test]
    fn alphabet_has_no_lookalikes() {
        for c in b"01OIL" {
            assert!(!CODE_ALPHABET.contains(c));
        }
    }
}
