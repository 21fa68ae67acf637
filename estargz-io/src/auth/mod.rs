//! Registry authentication: answering `WWW-Authenticate` challenges.
//!
//! Owns the docker token flow (anonymous bearer tokens, tokens for user/password by `GET` with
//! basic auth or by the OAuth2 `POST` form, identity tokens), plain basic auth, token expiry and
//! refresh. Where credentials come from is [`Keychain`]'s business; when to retry a request is
//! the HTTP engine's. Secrets never appear in `Debug` output or errors.

mod challenge;
mod keychain;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use serde::Deserialize;

pub use challenge::{parse_challenges, Challenge};
pub use keychain::{Credentials, Keychain};

use crate::error::{Error, Result};

/// How to ask a token server for a token when there are credentials.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TokenMethod {
    /// The OAuth2 `POST` form first (`grant_type=password` or `refresh_token`), then `GET`
    /// with basic auth if the server refuses it (what containerd does).
    #[default]
    PostThenGet,
    /// Only `GET` with basic auth (docker's classic flow).
    Get,
}

#[derive(Debug)]
enum Scheme {
    /// No challenge seen yet: requests go out without credentials.
    Unknown,
    Basic(HeaderValue),
    Bearer {
        realm: String,
        service: Option<String>,
        token: Option<(HeaderValue, Instant)>,
    },
}

#[derive(Debug)]
struct State {
    scheme: Scheme,
    /// Bumped every time the credentials change, so that many requests failing with 401 at
    /// once cause one refresh, not one each.
    generation: u64,
}

/// The authorisation state for one registry endpoint and one repository scope.
#[derive(Debug)]
pub struct Authorizer {
    host: String,
    scope: String,
    keychain: Arc<Keychain>,
    client: reqwest::Client,
    method: TokenMethod,
    state: tokio::sync::Mutex<State>,
    token_requests: AtomicU64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Authorizer {
    /// An authoriser for `host` (as the keychain knows it) and `scope` (e.g.
    /// `repository:library/alpine:pull`; several scopes separated by spaces).
    pub fn new(
        host: &str,
        scope: &str,
        keychain: Arc<Keychain>,
        client: reqwest::Client,
        method: TokenMethod,
    ) -> Authorizer {
        Authorizer {
            host: host.to_owned(),
            scope: scope.to_owned(),
            keychain,
            client,
            method,
            state: tokio::sync::Mutex::new(State {
                scheme: Scheme::Unknown,
                generation: 0,
            }),
            token_requests: AtomicU64::new(0),
        }
    }

    /// How many token requests were sent so far.
    pub fn token_requests(&self) -> u64 {
        self.token_requests.load(Ordering::Relaxed)
    }

    /// The `Authorization` header to send now (refreshing an expired token first) and the
    /// generation it belongs to (hand it back to [`Authorizer::unauthorized`]).
    pub async fn header(&self) -> Result<(Option<HeaderValue>, u64)> {
        let mut st = self.state.lock().await;
        let gen = st.generation;
        let expired = match &st.scheme {
            Scheme::Bearer { token, .. } => {
                token.as_ref().is_none_or(|(_, exp)| Instant::now() >= *exp)
            }
            _ => false,
        };
        if expired {
            self.refresh_token(&mut st).await?;
        }
        let h = match &st.scheme {
            Scheme::Unknown => None,
            Scheme::Basic(h) => Some(h.clone()),
            Scheme::Bearer { token, .. } => token.as_ref().map(|(h, _)| h.clone()),
        };
        Ok((h, st.generation.max(gen)))
    }

    /// Handles a 401 answer to a request sent with generation `gen`: parses the challenge and
    /// gets fresh credentials, unless another request already did since.
    pub async fn unauthorized(&self, url: &str, headers: &HeaderMap, gen: u64) -> Result<()> {
        let mut st = self.state.lock().await;
        if st.generation != gen {
            return Ok(());
        }
        let challenges: Vec<Challenge> = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_challenges)
            .collect();
        let auth_err = |reason: String| Error::Auth {
            url: url.to_owned(),
            reason,
        };
        if let Some(c) = challenges.iter().find(|c| c.scheme == "bearer") {
            let realm = c
                .param("realm")
                .ok_or_else(|| auth_err("Bearer challenge without realm".into()))?;
            st.scheme = Scheme::Bearer {
                realm: realm.to_owned(),
                service: c.param("service").map(str::to_owned),
                token: None,
            };
            self.refresh_token(&mut st).await?;
        } else if challenges.iter().any(|c| c.scheme == "basic") {
            match self.credentials().await? {
                Some(Credentials::Basic { username, password }) => {
                    st.scheme = Scheme::Basic(basic_header(&username, &password)?);
                    st.generation += 1;
                }
                Some(Credentials::IdentityToken(_)) => {
                    return Err(auth_err(format!(
                        "the registry wants basic auth, but the credentials for {} are an identity token",
                        self.host
                    )))
                }
                None => {
                    return Err(auth_err(format!(
                        "the registry wants basic auth and there are no credentials for {} (docker config.json / podman auth.json)",
                        self.host
                    )))
                }
            }
        } else {
            return Err(auth_err(format!(
                "401 with no usable WWW-Authenticate challenge ({:?})",
                headers.get(WWW_AUTHENTICATE)
            )));
        }
        Ok(())
    }

    async fn credentials(&self) -> Result<Option<Credentials>> {
        let kc = Arc::clone(&self.keychain);
        let host = self.host.clone();
        tokio::task::spawn_blocking(move || kc.lookup(&host))
            .await
            .map_err(|e| Error::io("looking up credentials", e.into()))?
    }

    async fn refresh_token(&self, st: &mut State) -> Result<()> {
        let Scheme::Bearer { realm, service, .. } = &st.scheme else {
            return Ok(());
        };
        let (realm, service) = (realm.clone(), service.clone());
        let creds = self.credentials().await?;
        let (token, ttl) = self.fetch_token(&realm, service.as_deref(), creds).await?;
        // Refresh a little before the server's expiry.
        let ttl = Duration::from_secs(ttl.max(1));
        let expiry = Instant::now() + ttl - ttl / 10;
        let header =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| Error::Auth {
                url: realm.clone(),
                reason: "the token server returned a token that is not a valid header value".into(),
            })?;
        if let Scheme::Bearer { token, .. } = &mut st.scheme {
            *token = Some((header, expiry));
        }
        st.generation += 1;
        Ok(())
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        creds: Option<Credentials>,
    ) -> Result<(String, u64)> {
        let err = |reason: String| Error::Auth {
            url: realm.to_owned(),
            reason,
        };
        let mut post_failure = None;
        let post_form = match (&creds, self.method) {
            (Some(Credentials::IdentityToken(t)), _) => Some(vec![
                ("grant_type", "refresh_token".to_owned()),
                ("refresh_token", t.clone()),
            ]),
            (Some(Credentials::Basic { username, password }), TokenMethod::PostThenGet) => {
                Some(vec![
                    ("grant_type", "password".to_owned()),
                    ("username", username.clone()),
                    ("password", password.clone()),
                ])
            }
            _ => None,
        };
        if let Some(mut form) = post_form {
            form.push(("client_id", "estargz-io".to_owned()));
            form.push(("scope", self.scope.clone()));
            if let Some(s) = service {
                form.push(("service", s.to_owned()));
            }
            let body = form
                .iter()
                .map(|(k, v)| format!("{k}={}", urlencode(v)))
                .collect::<Vec<_>>()
                .join("&");
            self.token_requests.fetch_add(1, Ordering::Relaxed);
            let resp = self
                .client
                .post(realm)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .map_err(|e| err(format!("POST: {e}")))?;
            let status = resp.status();
            if status.is_success() {
                return parse_token(resp).await.map_err(err);
            }
            if matches!(creds, Some(Credentials::IdentityToken(_))) {
                return Err(err(format!("POST with the identity token: HTTP {status}")));
            }
            post_failure = Some(status);
        }
        let mut req = self.client.get(realm);
        for scope in self.scope.split(' ').filter(|s| !s.is_empty()) {
            req = req.query(&[("scope", scope)]);
        }
        if let Some(s) = service {
            req = req.query(&[("service", s)]);
        }
        if let Some(Credentials::Basic { username, password }) = &creds {
            req = req.basic_auth(username, Some(password));
        }
        self.token_requests.fetch_add(1, Ordering::Relaxed);
        let resp = req.send().await.map_err(|e| err(format!("GET: {e}")))?;
        let status = resp.status();
        if !status.is_success() {
            let post = post_failure.map_or(String::new(), |s| format!(" (OAuth2 POST: HTTP {s})"));
            let who = if creds.is_some() {
                "with credentials"
            } else {
                "anonymously (no credentials found)"
            };
            return Err(err(format!("token request {who}: HTTP {status}{post}")));
        }
        parse_token(resp).await.map_err(err)
    }
}

async fn parse_token(resp: reqwest::Response) -> std::result::Result<(String, u64), String> {
    let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
    if bytes.len() > 1 << 20 {
        return Err("token answer larger than 1 MiB".into());
    }
    let a: TokenAnswer =
        serde_json::from_slice(&bytes).map_err(|e| format!("invalid token JSON: {e}"))?;
    let token = a
        .token
        .filter(|t| !t.is_empty())
        .or(a.access_token)
        .filter(|t| !t.is_empty())
        .ok_or("the token answer has neither token nor access_token")?;
    Ok((token, a.expires_in.unwrap_or(60)))
}

fn basic_header(user: &str, pass: &str) -> Result<HeaderValue> {
    let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    HeaderValue::from_str(&format!("Basic {v}"))
        .map_err(|_| Error::Config("credentials are not a valid header value".into()))
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding() {
        assert_eq!(
            urlencode("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
        assert_eq!(urlencode("a b"), "a+b");
    }
}
