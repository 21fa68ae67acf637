//! Where registry credentials come from: explicit ones, docker's `config.json`, podman's
//! `auth.json`, and credential helpers (`docker-credential-<name> get`).
//!
//! Lookups are by registry host (`127.0.0.1:5000`, `ghcr.io`); docker's legacy keys
//! (`https://index.docker.io/v1/`, `http://host/v2/`) are normalised to the host. Nothing here
//! talks to a registry; the [`super::Authorizer`] does.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::Deserialize;

use crate::error::{Error, Result};

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A user name and password (or personal access token).
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// An identity (refresh) token, exchanged at the token endpoint with
    /// `grant_type=refresh_token`.
    IdentityToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { username, .. } => {
                write!(
                    f,
                    "Basic {{ username: {username:?}, password: <redacted> }}"
                )
            }
            Credentials::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

impl Credentials {
    /// Basic credentials.
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials::Basic {
            username: username.into(),
            password: password.into(),
        }
    }
}

/// One place to look for credentials, in the order a [`Keychain`] tries them.
#[derive(Clone, Debug)]
enum Entry {
    Static(String, Credentials),
    ConfigFile(PathBuf),
}

/// An ordered list of credential sources.
///
/// ```
/// use estargz_io::auth::{Credentials, Keychain};
///
/// let kc = Keychain::empty().with("127.0.0.1:5000", Credentials::basic("u", "p"));
/// assert_eq!(kc.lookup("127.0.0.1:5000").unwrap(), Some(Credentials::basic("u", "p")));
/// assert_eq!(kc.lookup("other:5000").unwrap(), None);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Keychain {
    entries: Vec<Entry>,
    helper_dirs: Vec<PathBuf>,
}

#[derive(Deserialize, Default)]
struct ConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

impl Keychain {
    /// A keychain with no sources (anonymous access only).
    pub fn empty() -> Keychain {
        Keychain::default()
    }

    /// The usual places, in this order: `$REGISTRY_AUTH_FILE`,
    /// `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.config/containers/auth.json` (podman),
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json` (docker). Missing files are
    /// skipped at lookup time.
    pub fn from_environment() -> Keychain {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let home = env("HOME");
        let mut files = Vec::new();
        if let Some(p) = env("REGISTRY_AUTH_FILE") {
            files.push(p);
        }
        if let Some(d) = env("XDG_RUNTIME_DIR") {
            files.push(d.join("containers/auth.json"));
        }
        if let Some(h) = &home {
            files.push(h.join(".config/containers/auth.json"));
        }
        match env("DOCKER_CONFIG") {
            Some(d) => files.push(d.join("config.json")),
            None => {
                if let Some(h) = &home {
                    files.push(h.join(".docker/config.json"));
                }
            }
        }
        Keychain {
            entries: files.into_iter().map(Entry::ConfigFile).collect(),
            helper_dirs: Vec::new(),
        }
    }

    /// Adds explicit credentials for `host`, tried before everything added later.
    pub fn with(mut self, host: &str, creds: Credentials) -> Keychain {
        self.entries.push(Entry::Static(host.to_owned(), creds));
        self
    }

    /// Adds a docker `config.json` / podman `auth.json` file.
    pub fn with_file(mut self, path: impl Into<PathBuf>) -> Keychain {
        self.entries.push(Entry::ConfigFile(path.into()));
        self
    }

    /// Looks for `docker-credential-*` helpers in `dir` before `PATH`.
    pub fn with_helper_dir(mut self, dir: impl Into<PathBuf>) -> Keychain {
        self.helper_dirs.push(dir.into());
        self
    }

    /// Credentials for `host`, from the first source that has some. Runs credential helpers
    /// (blocking): call it from a blocking context or `spawn_blocking`.
    pub fn lookup(&self, host: &str) -> Result<Option<Credentials>> {
        for e in &self.entries {
            match e {
                Entry::Static(h, c) if h == host => return Ok(Some(c.clone())),
                Entry::Static(..) => {}
                Entry::ConfigFile(path) => {
                    if let Some(c) = lookup_file(path, host, &self.helper_dirs)? {
                        return Ok(Some(c));
                    }
                }
            }
        }
        Ok(None)
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://host:5000/v2/` → `host:5000`.
fn normalize_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.split('/').next().unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        k => k.to_owned(),
    }
}

fn lookup_file(path: &Path, host: &str, helper_dirs: &[PathBuf]) -> Result<Option<Credentials>> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    let cfg: ConfigJson = serde_json::from_slice(&text)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    let host = normalize_key(host);
    if let Some((_, helper)) = cfg
        .cred_helpers
        .iter()
        .find(|(k, _)| normalize_key(k) == host)
    {
        return run_helper(helper, &host, helper_dirs);
    }
    if let Some((_, entry)) = cfg.auths.iter().find(|(k, _)| normalize_key(k) == host) {
        if let Some(t) = entry.identity_token.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credentials::IdentityToken(t.to_owned())));
        }
        if let Some(a) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(a.trim())
                .map_err(|e| {
                    Error::Config(format!("{}: auths.{host}.auth: {e}", path.display()))
                })?;
            let s = String::from_utf8(raw).map_err(|_| {
                Error::Config(format!(
                    "{}: auths.{host}.auth is not UTF-8",
                    path.display()
                ))
            })?;
            let (u, p) = s.split_once(':').ok_or_else(|| {
                Error::Config(format!(
                    "{}: auths.{host}.auth is not base64(user:password)",
                    path.display()
                ))
            })?;
            return Ok(Some(Credentials::basic(u, p)));
        }
        if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
            return Ok(Some(Credentials::basic(u, p)));
        }
    }
    if let Some(store) = cfg.creds_store.as_deref().filter(|s| !s.is_empty()) {
        return run_helper(store, &host, helper_dirs);
    }
    Ok(None)
}

/// Runs `docker-credential-<helper> get` with the host on stdin. "credentials not found" is
/// `None`.
fn run_helper(helper: &str, host: &str, dirs: &[PathBuf]) -> Result<Option<Credentials>> {
    if helper.contains('/') {
        return Err(Error::Config(format!(
            "credential helper name {helper:?} contains '/'"
        )));
    }
    let prog = format!("docker-credential-{helper}");
    let exe = dirs
        .iter()
        .map(|d| d.join(&prog))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(&prog));
    let mut child = Command::new(&exe)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(format!("running {prog}"), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(host.as_bytes())
            .map_err(|e| Error::io(format!("writing to {prog}"), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io(format!("running {prog}"), e))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if msg.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        return Err(Error::Auth {
            url: host.to_owned(),
            reason: format!("{prog} get failed ({}): {}", out.status, msg.trim()),
        });
    }
    let ans: HelperAnswer = serde_json::from_slice(&out.stdout).map_err(|e| Error::Auth {
        url: host.to_owned(),
        reason: format!("{prog} get printed invalid JSON: {e}"),
    })?;
    if ans.username == "<token>" {
        return Ok(Some(Credentials::IdentityToken(ans.secret)));
    }
    Ok(Some(Credentials::basic(ans.username, ans.secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(normalize_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_key("http://h:5000/v2/"), "h:5000");
        assert_eq!(normalize_key("ghcr.io"), "ghcr.io");
    }

    #[test]
    fn config_json_auths_and_helpers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        std::fs::write(
            &p,
            format!(
                r#"{{"auths":{{"https://reg.example:5000/v2/":{{"auth":"{auth}"}},
                "tok.example":{{"identitytoken":"idt"}}}},
                "credHelpers":{{"helped.example":"estargz-io-test-missing-helper"}}}}"#
            ),
        )
        .unwrap();
        let kc = Keychain::empty().with_file(&p);
        assert_eq!(
            kc.lookup("reg.example:5000").unwrap(),
            Some(Credentials::basic("alice", "s3cret"))
        );
        assert_eq!(
            kc.lookup("tok.example").unwrap(),
            Some(Credentials::IdentityToken("idt".into()))
        );
        assert_eq!(kc.lookup("nothing.example").unwrap(), None);
        // A helper that does not exist is an error naming it.
        let e = kc.lookup("helped.example").unwrap_err().to_string();
        assert!(
            e.contains("docker-credential-estargz-io-test-missing-helper"),
            "{e}"
        );
        // Missing files are skipped.
        let kc = Keychain::empty().with_file(dir.path().join("none.json"));
        assert_eq!(kc.lookup("reg.example:5000").unwrap(), None);
    }

    #[test]
    fn credential_helper_is_run() {
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-estargzio");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread host\nif [ \"$host\" = h.example ]; then echo '{\"ServerURL\":\"h.example\",\"Username\":\"bob\",\"Secret\":\"pw\"}'; else echo 'credentials not found in native keychain'; exit 1; fi\n",
        )
        .unwrap();
        std::process::Command::new("chmod")
            .arg("+x")
            .arg(&helper)
            .status()
            .unwrap();
        let cfg = dir.path().join("config.json");
        std::fs::write(
            &cfg,
            r#"{"credsStore":"estargzio","auths":{"h.example":{}}}"#,
        )
        .unwrap();
        let kc = Keychain::empty()
            .with_file(&cfg)
            .with_helper_dir(dir.path());
        assert_eq!(
            kc.lookup("h.example").unwrap(),
            Some(Credentials::basic("bob", "pw"))
        );
        assert_eq!(kc.lookup("other.example").unwrap(), None);
    }
}
