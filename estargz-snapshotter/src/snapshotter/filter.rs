//! containerd's filter syntax, as `List` (`Walk`) receives it.
//!
//! ```text
//! selectors := selector ("," selector)*          all must match
//! selector  := fieldpath (operator value)?       no operator: the field is present
//! fieldpath := field ('.' field)*
//! field     := quoted | [A-Za-z] [A-Za-z0-9_]+
//! operator  := "==" | "!=" | "~="
//! value     := quoted | [^\s,]+                  ~= also accepts /re/ and |re|
//! ```
//! Several filter strings match when any of them does. Fields of a snapshot: `kind`, `name`,
//! `parent`, `labels.<key>` (the rest of the path joined with `.`). containerd's metadata layer
//! relies on this: it finds a remote snapshot with
//! `labels."containerd.io/snapshot.ref"==<chain id>,parent=="<key>"`.

use regex::Regex;

use super::error::{Error, Result};
use super::store::Info;

#[derive(Debug)]
enum Op {
    Present,
    Equal(String),
    NotEqual(String),
    Matches(Regex),
}

#[derive(Debug)]
struct Selector {
    path: Vec<String>,
    op: Op,
}

/// A parsed filter: any of several conjunctions of selectors. Empty matches everything.
#[derive(Debug, Default)]
pub struct Filter {
    any: Vec<Vec<Selector>>,
}

struct Scanner<'a> {
    input: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn err(&self, msg: &str) -> Error {
        Error::InvalidArgument(format!(
            "filters: parse error: [{} >|{}|< ]: {msg}",
            &self.input[..self.pos.min(self.input.len())],
            self.input.get(self.pos..).unwrap_or("")
        ))
    }

    fn skip_space(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
    }

    fn peek(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    fn eat(&mut self, s: &str) -> bool {
        self.skip_space();
        if self.input[self.pos..].starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    /// A quoted string starting at the current position, with Go escapes.
    fn quoted(&mut self, quote: char) -> Result<String> {
        self.pos += quote.len_utf8();
        let mut out = String::new();
        loop {
            let c = self
                .peek()
                .ok_or_else(|| self.err("quoted literal not terminated"))?;
            self.pos += c.len_utf8();
            if c == quote {
                return Ok(out);
            }
            if c == '\\' {
                let e = self
                    .peek()
                    .ok_or_else(|| self.err("quoted literal not terminated"))?;
                self.pos += e.len_utf8();
                let unescaped = match e {
                    'a' => '\x07',
                    'b' => '\x08',
                    'f' => '\x0c',
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'v' => '\x0b',
                    '\\' => '\\',
                    c if c == quote => c,
                    // regex alternatives keep unknown escapes (\d, \.) for the regex engine
                    c if quote == '/' || quote == '|' => {
                        out.push('\\');
                        c
                    }
                    _ => return Err(self.err("unknown escape sequence")),
                };
                out.push(unescaped);
            } else {
                out.push(c);
            }
        }
    }

    fn field(&mut self) -> Result<String> {
        self.skip_space();
        match self.peek() {
            Some(q @ ('"' | '\'' | '`')) => self.quoted(q),
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let start = self.pos;
                while let Some(c) = self.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                Ok(self.input[start..self.pos].to_owned())
            }
            _ => Err(self.err("expected field or quoted")),
        }
    }

    fn value(&mut self, regex: bool) -> Result<String> {
        self.skip_space();
        match self.peek() {
            Some(q @ ('"' | '\'' | '`')) => self.quoted(q),
            Some(q @ ('/' | '|')) if regex => self.quoted(q),
            Some(_) => {
                let start = self.pos;
                while let Some(c) = self.peek() {
                    if c.is_whitespace() || c == ',' {
                        break;
                    }
                    self.pos += c.len_utf8();
                }
                Ok(self.input[start..self.pos].to_owned())
            }
            None => Err(self.err("expected value or quoted")),
        }
    }
}

fn parse_one(s: &str) -> Result<Vec<Selector>> {
    let mut sc = Scanner { input: s, pos: 0 };
    let mut all = Vec::new();
    loop {
        let mut path = vec![sc.field()?];
        while sc.eat(".") {
            path.push(sc.field()?);
        }
        sc.skip_space();
        let op = if sc.eat("==") {
            Op::Equal(sc.value(false)?)
        } else if sc.eat("!=") {
            Op::NotEqual(sc.value(false)?)
        } else if sc.eat("~=") {
            let v = sc.value(true)?;
            Op::Matches(
                Regex::new(&v)
                    .map_err(|e| Error::InvalidArgument(format!("filters: {v:?}: {e}")))?,
            )
        } else {
            Op::Present
        };
        all.push(Selector { path, op });
        sc.skip_space();
        if sc.pos == s.len() {
            return Ok(all);
        }
        if !sc.eat(",") {
            return Err(sc.err("unexpected input"));
        }
    }
}

impl Filter {
    /// Parses filter strings; they match when any of them does. No strings (or one empty
    /// string) match everything.
    pub fn parse<S: AsRef<str>>(filters: &[S]) -> Result<Self> {
        let mut any = Vec::new();
        for f in filters {
            let f = f.as_ref();
            if f.is_empty() {
                return Ok(Filter::default());
            }
            any.push(parse_one(f)?);
        }
        Ok(Filter { any })
    }

    /// Whether the snapshot matches.
    pub fn matches(&self, info: &Info) -> bool {
        if self.any.is_empty() {
            return true;
        }
        self.any
            .iter()
            .any(|all| all.iter().all(|s| s.matches(info)))
    }
}

impl Selector {
    fn matches(&self, info: &Info) -> bool {
        let field: Option<&str> = match self.path[0].as_str() {
            "kind" => Some(info.record.kind.as_str()),
            "name" => Some(&info.name),
            "parent" => Some(&info.record.parent),
            "labels" if self.path.len() > 1 => info
                .record
                .labels
                .get(&self.path[1..].join("."))
                .map(String::as_str),
            _ => None,
        };
        match &self.op {
            Op::Present => field.is_some(),
            Op::Equal(v) => field == Some(v.as_str()),
            Op::NotEqual(v) => field.unwrap_or("") != v,
            Op::Matches(re) => re.is_match(field.unwrap_or("")),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use super::super::store::{Kind, Record, Timestamp, Usage};
    use super::*;

    fn info(name: &str, parent: &str, kind: Kind, labels: &[(&str, &str)]) -> Info {
        Info {
            name: name.into(),
            record: Record {
                id: 1,
                kind,
                parent: parent.into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
                created: Timestamp::default(),
                updated: Timestamp::default(),
                usage: Usage::default(),
            },
        }
    }

    #[test]
    fn containerd_remote_snapshot_lookup() {
        let i = info(
            "sha256:abc",
            "default/3/sha256:p",
            Kind::Committed,
            &[("containerd.io/snapshot.ref", "sha256:abc")],
        );
        let f = Filter::parse(&[
            r#"labels."containerd.io/snapshot.ref"==sha256:abc,parent=="default/3/sha256:p""#,
        ])
        .unwrap();
        assert!(f.matches(&i));
        let f = Filter::parse(&[r#"labels."containerd.io/snapshot.ref"==sha256:abc,parent=="x""#])
            .unwrap();
        assert!(!f.matches(&i));
    }

    #[test]
    fn operators_and_any() {
        let i = info("a", "", Kind::Active, &[("x", "1")]);
        for (f, want) in [
            ("kind==active", true),
            ("kind!=active", false),
            ("labels.x", true),
            ("labels.y", false),
            ("labels.y!=1", true),
            ("name~=^a$", true),
            ("name~=/^[ab]$/", true),
            ("kind==committed,labels.x", false),
            ("  kind == active , name==a", true),
        ] {
            assert_eq!(Filter::parse(&[f]).unwrap().matches(&i), want, "{f}");
        }
        assert!(Filter::parse(&["kind==view", "name==a"])
            .unwrap()
            .matches(&i));
        assert!(Filter::parse::<&str>(&[]).unwrap().matches(&i));
        for bad in ["==x", "kind==", "kind=x", "labels.\"x", "a,"] {
            assert!(Filter::parse(&[bad]).is_err(), "{bad}");
        }
    }
}
