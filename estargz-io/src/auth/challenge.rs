//! Parsing `WWW-Authenticate` challenges (RFC 9110 §11.6.1), as registries send them:
//! `Bearer realm="https://auth.example/token",service="registry",scope="repository:r:pull"`.
//!
//! The header comes from the network: malformed input yields `None`, never a panic.

use std::collections::BTreeMap;

/// One authentication challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lowercased (`bearer`, `basic`).
    pub scheme: String,
    /// Parameters with lowercased names.
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    /// A parameter by (lowercase) name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Parses every challenge of one `WWW-Authenticate` header value.
pub fn parse_challenges(value: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        // A token: either a new scheme, or a parameter name of the current challenge.
        let tok_end = rest
            .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
            .unwrap_or(rest.len());
        let token = &rest[..tok_end];
        let after = rest[tok_end..].trim_start();
        if let Some(val_part) = after.strip_prefix('=') {
            // name=value
            let val_part = val_part.trim_start();
            let (val, remaining) = if let Some(q) = val_part.strip_prefix('"') {
                let mut val = String::new();
                let mut chars = q.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                val.push(n);
                            }
                        }
                        '"' => {
                            end = Some(i + 1);
                            break;
                        }
                        c => val.push(c),
                    }
                }
                match end {
                    Some(e) => (val, &q[e..]),
                    None => return out, // unterminated quote
                }
            } else {
                let e = val_part.find(',').unwrap_or(val_part.len());
                (val_part[..e].trim().to_owned(), &val_part[e..])
            };
            if let Some(c) = out.last_mut() {
                c.params.insert(token.to_ascii_lowercase(), val);
            }
            rest = remaining.trim_start().trim_start_matches(',').trim_start();
        } else if token.is_empty() {
            rest = after.trim_start_matches(',').trim_start();
        } else {
            out.push(Challenge {
                scheme: token.to_ascii_lowercase(),
                params: BTreeMap::new(),
            });
            rest = after.trim_start_matches(',').trim_start();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(c[0].param("scope"), Some("repository:library/ubuntu:pull"));
    }

    #[test]
    fn basic_and_odd_input() {
        let c = parse_challenges(r#"Basic realm="test-realm""#);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("test-realm"));
        assert!(parse_challenges("").is_empty());
        let c = parse_challenges(r#"Bearer realm="a\"b", error=invalid_token"#);
        assert_eq!(c[0].param("realm"), Some("a\"b"));
        assert_eq!(c[0].param("error"), Some("invalid_token"));
        for s in [
            "Bearer realm=\"unterminated",
            "=",
            ",,,",
            "Bearer ,realm",
            "a=b=c",
        ] {
            let _ = parse_challenges(s);
        }
    }
}
