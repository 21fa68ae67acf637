//! Registry references: `HOST[:PORT]/REPO@sha256:DIGEST` (a blob or manifest by digest) and
//! `HOST[:PORT]/REPO:TAG`, with docker's defaults (`alpine` → `docker.io/library/alpine`).

use std::fmt;
use std::str::FromStr;

use estargz::Digest;

use crate::error::{Error, Result};

/// A parsed reference to a repository, with a tag and/or digest.
///
/// ```
/// use estargz_io::Reference;
///
/// let r: Reference = "127.0.0.1:5000/test/layer@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse().unwrap();
/// assert_eq!(r.host, "127.0.0.1:5000");
/// assert_eq!(r.repository, "test/layer");
/// assert!(r.digest.is_some());
///
/// let r: Reference = "alpine:3.19".parse().unwrap();
/// assert_eq!((r.host.as_str(), r.repository.as_str(), r.tag.as_deref()), ("docker.io", "library/alpine", Some("3.19")));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The registry host, with port (`docker.io`, `127.0.0.1:5000`).
    pub host: String,
    /// The repository path (`library/alpine`).
    pub repository: String,
    /// The tag, if any.
    pub tag: Option<String>,
    /// The digest, if any.
    pub digest: Option<Digest>,
}

impl Reference {
    /// The tag or digest as used in a manifest URL (the digest wins).
    pub fn object(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(s: &str) -> Result<Reference> {
        let bad = |reason: &str| Error::Reference {
            value: s.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = s.strip_prefix("docker://").unwrap_or(s);
        let (rest, digest) = match rest.split_once('@') {
            Some((r, d)) => (r, Some(Digest::parse(d).map_err(|e| bad(&e.to_string()))?)),
            None => (rest, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_owned()),
            ),
            None => (rest, None),
        };
        if let Some(t) = &tag {
            if t.is_empty()
                || t.len() > 128
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            {
                return Err(bad("invalid tag"));
            }
        }
        let (host, repo) = match name.split_once('/') {
            Some((h, r))
                if h.contains('.') || h.contains(':') || h == "localhost" || h.starts_with('[') =>
            {
                (h.to_owned(), r.to_owned())
            }
            _ => ("docker.io".to_owned(), name.to_owned()),
        };
        let repo = if host == "docker.io" && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo
        };
        if repo.is_empty()
            || repo.split('/').any(str::is_empty)
            || !repo.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '/' | '_' | '.' | '-')
            })
        {
            return Err(bad(
                "invalid repository name (lowercase letters, digits, '/', '_', '.', '-')",
            ));
        }
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(bad("invalid host"));
        }
        Ok(Reference {
            host,
            repository: repo,
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses() {
        let r: Reference = format!("localhost:5000/a/b:v1@{D}").parse().unwrap();
        assert_eq!(r.host, "localhost:5000");
        assert_eq!(r.repository, "a/b");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.to_string(), format!("localhost:5000/a/b:v1@{D}"));
        let r: Reference = "docker://ghcr.io/x/y".parse().unwrap();
        assert_eq!((r.host.as_str(), r.tag), ("ghcr.io", None));
        let r: Reference = "user/img".parse().unwrap();
        assert_eq!(r.repository, "user/img");
        for bad in ["", "HOST/Upper", "h.io/a//b", "h.io/a:", "h.io/a@sha256:zz"] {
            assert!(bad.parse::<Reference>().is_err(), "{bad}");
        }
    }
}
