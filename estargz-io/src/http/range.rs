//! HTTP range syntax: `Range` headers out, `Content-Range` and `multipart/byteranges` in.
//!
//! Pure functions over header values and body bytes. Every input here comes from a server, so
//! every parser returns `None`/`Err` on anything unexpected and never panics.

use std::ops::Range;

/// `bytes=a-b,c-d` for half-open `ranges` (each must be non-empty).
pub fn range_header(ranges: &[Range<u64>]) -> String {
    let mut s = String::from("bytes=");
    for (i, r) in ranges.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("{}-{}", r.start, r.end.saturating_sub(1)));
    }
    s
}

/// A parsed `Content-Range: bytes a-b/total` (`total` is `None` for `*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentRange {
    /// The bytes the part holds, half-open.
    pub range: Range<u64>,
    /// The blob's total length, when the server said it.
    pub total: Option<u64>,
}

/// Parses `bytes a-b/total` or `bytes a-b/*`. `bytes */total` (unsatisfied) is `None`.
pub fn parse_content_range(value: &str) -> Option<ContentRange> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (span, total) = rest.split_once('/')?;
    let (a, b) = span.trim().split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let last: u64 = b.trim().parse().ok()?;
    if last < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => {
            let t: u64 = t.parse().ok()?;
            if last >= t {
                return None;
            }
            Some(t)
        }
    };
    Some(ContentRange {
        range: start..last.checked_add(1)?,
        total,
    })
}

/// The `boundary` parameter of a `multipart/byteranges; boundary=...` content type.
pub fn multipart_boundary(content_type: &str) -> Option<String> {
    let mut parts = content_type.split(';');
    let mime = parts.next()?.trim();
    if !mime.eq_ignore_ascii_case("multipart/byteranges") {
        return None;
    }
    for p in parts {
        let (k, v) = p.split_once('=')?;
        if k.trim().eq_ignore_ascii_case("boundary") {
            let v = v.trim().trim_matches('"');
            if v.is_empty() || v.len() > 200 {
                return None;
            }
            return Some(v.to_owned());
        }
    }
    None
}

/// One part of a `multipart/byteranges` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// The bytes the part holds.
    pub range: Range<u64>,
    /// Where they are in the body.
    pub body: Range<usize>,
}

/// Parses a `multipart/byteranges` body (RFC 9110 §14.6): parts separated by
/// `--boundary`, each with headers (one must be `Content-Range`) and exactly as many bytes as
/// its range says.
pub fn parse_multipart(body: &[u8], boundary: &str) -> Result<Vec<Part>, String> {
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let mut pos = find(body, delim, 0).ok_or("no boundary line in the body")?;
    let mut parts = Vec::new();
    loop {
        pos += delim.len();
        if body.get(pos..pos + 2) == Some(b"--") {
            return Ok(parts);
        }
        // End of the boundary line.
        let eol = find(body, b"\n", pos).ok_or("boundary line not terminated")?;
        pos = eol + 1;
        // Headers until an empty line.
        let mut content_range = None;
        loop {
            let eol = find(body, b"\n", pos).ok_or("part headers not terminated")?;
            let line = &body[pos..eol];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            pos = eol + 1;
            if line.is_empty() {
                break;
            }
            let line = std::str::from_utf8(line).map_err(|_| "non-UTF-8 part header")?;
            if let Some((k, v)) = line.split_once(':') {
                if k.trim().eq_ignore_ascii_case("content-range") {
                    content_range = Some(
                        parse_content_range(v)
                            .ok_or_else(|| format!("bad part Content-Range {v:?}"))?,
                    );
                }
            }
        }
        let cr = content_range.ok_or("a part has no Content-Range")?;
        let n = usize::try_from(cr.range.end - cr.range.start).map_err(|_| "part too large")?;
        let end = pos.checked_add(n).ok_or("part too large")?;
        if end > body.len() {
            return Err(format!(
                "part {}-{} is truncated ({} of {n} bytes)",
                cr.range.start,
                cr.range.end - 1,
                body.len() - pos
            ));
        }
        parts.push(Part {
            range: cr.range,
            body: pos..end,
        });
        // CRLF, then the next delimiter.
        let next = find(body, delim, end).ok_or("missing closing boundary")?;
        if next > end + 2 {
            return Err("garbage between a part and the next boundary".into());
        }
        pos = next;
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header() {
        assert_eq!(range_header(&[0..10, 20..21]), "bytes=0-9,20-20");
    }

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 0-9/100"),
            Some(ContentRange {
                range: 0..10,
                total: Some(100)
            })
        );
        assert_eq!(
            parse_content_range("bytes 5-9/*").map(|c| c.total),
            Some(None)
        );
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("bytes 9-5/100"), None);
        assert_eq!(parse_content_range("bytes 0-100/100"), None);
        assert_eq!(parse_content_range("bytes 0-18446744073709551615/*"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }

    #[test]
    fn boundary() {
        assert_eq!(
            multipart_boundary("multipart/byteranges; boundary=abc").as_deref(),
            Some("abc")
        );
        assert_eq!(
            multipart_boundary("multipart/byteranges; boundary=\"a b\"").as_deref(),
            Some("a b")
        );
        assert_eq!(multipart_boundary("application/octet-stream"), None);
    }

    #[test]
    fn multipart() {
        let body = b"\r\n--XX\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 0-2/10\r\n\r\nabc\r\n--XX\r\nContent-Range: bytes 7-9/10\r\n\r\nhij\r\n--XX--\r\n";
        let parts = parse_multipart(body, "XX").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].range, 0..3);
        assert_eq!(&body[parts[0].body.clone()], b"abc");
        assert_eq!(parts[1].range, 7..10);
        assert_eq!(&body[parts[1].body.clone()], b"hij");
    }

    #[test]
    fn multipart_malformed() {
        assert!(parse_multipart(b"", "XX").is_err());
        assert!(parse_multipart(b"--XX\r\n\r\nabc\r\n--XX--", "XX").is_err());
        assert!(parse_multipart(b"--XX\r\nContent-Range: bytes 0-9/10\r\n\r\nabc", "XX").is_err());
        assert!(parse_multipart(
            b"--XX\r\nContent-Range: bytes 0-2/10\r\n\r\nabcGARBAGE\r\n--XX--",
            "XX"
        )
        .is_err());
        // Fuzz-ish: every prefix of a valid body errors or parses without panicking.
        let body = b"--XX\r\nContent-Range: bytes 0-2/10\r\n\r\nabc\r\n--XX--\r\n";
        for n in 0..body.len() {
            let _ = parse_multipart(&body[..n], "XX");
        }
    }
}
