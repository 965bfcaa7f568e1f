//! Access control: bearer token or basic credentials, compared in constant time, and the
//! Origin rule for `/ws` that stops other sites' pages from reading the stream.
//!
//! Secrets are compared through their SHA-256 digests, so neither their content nor their
//! length shows in the comparison's timing.

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::config::Auth;

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No or wrong credentials.
    Unauthenticated,
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let (da, db) = (Sha256::digest(a), Sha256::digest(b));
    da.iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Value of `name` in a query string, percent-decoding `%XX` and `+`.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = || {
            let pair = b.get(i + 1..i + 3)?;
            u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()
        };
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match hex() {
                Some(v) => {
                    out.push(v);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks a request against the configured auth. `allow_query_token` lets the page pass the
/// bearer token as `?token=` where it cannot set a header (the WebSocket).
pub(crate) fn check(auth: &Auth, headers: &HeaderMap, query: Option<&str>) -> Result<(), Denied> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match auth {
        Auth::None => Ok(()),
        Auth::Bearer(token) => {
            let from_header = presented.and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| rest.trim().to_owned())
            });
            let given = from_header.or_else(|| query_param(query, "token"));
            match given {
                Some(g) if ct_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
                _ => Err(Denied::Unauthenticated),
            }
        }
        Auth::Basic { user, password } => {
            let decoded = presented
                .and_then(|v| {
                    let (scheme, rest) = v.split_once(' ')?;
                    scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
                })
                .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok());
            let expected = format!("{user}:{password}");
            match decoded {
                Some(d) if ct_eq(&d, expected.as_bytes()) => Ok(()),
                _ => Err(Denied::Unauthenticated),
            }
        }
    }
}

/// The `WWW-Authenticate` challenge for a refused request.
pub(crate) fn challenge(auth: &Auth) -> Option<&'static str> {
    match auth {
        Auth::None => None,
        Auth::Bearer(_) => Some("Bearer realm=\"vitals-embed\""),
        Auth::Basic { .. } => Some("Basic realm=\"vitals-embed\", charset=\"UTF-8\""),
    }
}

/// True when a browser page at `Origin` may open the WebSocket: no Origin (not a browser),
/// same origin as the `Host` it connected to, or listed in `allowed`.
pub(crate) fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/');
    if allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(k.clone(), v);
            }
        }
        h
    }

    #[test]
    fn bearer_from_header_or_query() {
        let auth = Auth::Bearer("s3cret".into());
        let ok = headers(&[(header::AUTHORIZATION, "Bearer s3cret")]);
        assert_eq!(check(&auth, &ok, None), Ok(()));
        assert_eq!(
            check(&auth, &HeaderMap::new(), Some("a=1&token=s3cret")),
            Ok(())
        );
        assert_eq!(
            check(&auth, &HeaderMap::new(), Some("token=s3cre")),
            Err(Denied::Unauthenticated)
        );
        let wrong = headers(&[(header::AUTHORIZATION, "Bearer nope")]);
        assert_eq!(check(&auth, &wrong, None), Err(Denied::Unauthenticated));
        assert_eq!(
            check(&auth, &HeaderMap::new(), None),
            Err(Denied::Unauthenticated)
        );
    }

    #[test]
    fn basic_credentials() {
        let auth = Auth::Basic {
            user: "ops".into(),
            password: "pa:ss".into(),
        };
        let good = base64::engine::general_purpose::STANDARD.encode("ops:pa:ss");
        let h = headers(&[(header::AUTHORIZATION, &format!("Basic {good}"))]);
        assert_eq!(check(&auth, &h, None), Ok(()));
        let bad = base64::engine::general_purpose::STANDARD.encode("ops:wrong");
        let h = headers(&[(header::AUTHORIZATION, &format!("Basic {bad}"))]);
        assert_eq!(check(&auth, &h, None), Err(Denied::Unauthenticated));
        let h = headers(&[(header::AUTHORIZATION, "Basic !!!")]);
        assert_eq!(check(&auth, &h, None), Err(Denied::Unauthenticated));
    }

    #[test]
    fn origin_rules() {
        let none: Vec<String> = Vec::new();
        assert!(origin_allowed(&HeaderMap::new(), &none));
        let same = headers(&[
            (header::ORIGIN, "http://127.0.0.1:8080"),
            (header::HOST, "127.0.0.1:8080"),
        ]);
        assert!(origin_allowed(&same, &none));
        let other = headers(&[
            (header::ORIGIN, "https://evil.example"),
            (header::HOST, "127.0.0.1:8080"),
        ]);
        assert!(!origin_allowed(&other, &none));
        assert!(origin_allowed(
            &other,
            &["https://evil.example/".to_owned()]
        ));
        assert!(origin_allowed(&other, &["*".to_owned()]));
        let null = headers(&[(header::ORIGIN, "null"), (header::HOST, "127.0.0.1:8080")]);
        assert!(!origin_allowed(&null, &none));
    }

    #[test]
    fn query_tokens_are_percent_decoded() {
        assert_eq!(
            query_param(Some("token=a%2Bb%3D"), "token").as_deref(),
            Some("a+b=")
        );
        assert_eq!(
            query_param(Some("token=%zz"), "token").as_deref(),
            Some("%zz")
        );
        assert_eq!(
            query_param(Some("token=%4"), "token").as_deref(),
            Some("%4")
        );
        assert_eq!(query_param(Some("x=1"), "token"), None);
    }
}
