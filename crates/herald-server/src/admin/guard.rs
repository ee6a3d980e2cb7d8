//! Who may use the admin listener, checked in one place for `/metrics` and the console.
//!
//! A browser is the attacker's tool here: any page the operator opens can send requests to
//! `127.0.0.1:9601`, and a name the attacker controls can be made to resolve there (DNS
//! rebinding). So, besides the tokens:
//! - the `Host` a request names must be one the listener answers to (the loopback names,
//!   `admin_host` and `admin_allowed_hosts`): a rebound name is refused before anything is
//!   read. A request that proves itself with a token in its `Authorization` header skips
//!   this, since a page cannot know the token and browsers never send that header alone;
//! - a request that changes something must carry the console's own header
//!   ([`WRITE_HEADER`]), which a cross-site page cannot send without a CORS preflight the
//!   listener never grants, and its `Origin`, when sent, must be the listener's own.
//!
//! Two tokens: `admin_token` opens everything; `metrics_token` opens `/metrics` only. Both
//! and the host list are swapped whole by a reload ([`Guard::reload`]): the old token is
//! refused from the next request on. The probes (`/live`, `/ready`) are not guarded: they
//! say no more than the public `/up`, and a load balancer names the node by any address.

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cookie::{Cookie, SameSite};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::settings::AdminConfig;

/// The cookie a `/console?token=…` visit sets, so that the page's own requests (the live
/// log's `EventSource` cannot send headers) prove the admin token. It holds [`session_of`]
/// the token, never the token itself.
const COOKIE: &str = "herald_console";

/// The header a request that changes something must carry (the console's script sends
/// it). Its value is not checked: a cross-site page cannot send it at all.
pub(crate) const WRITE_HEADER: &str = "x-herald-console";

/// What a request asks of the admin listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// `/metrics`: either token.
    Metrics,
    /// The console's page, state and live log: the admin token.
    Read,
    /// A request that changes something (the console's publish): the admin token, the
    /// console's header and a same-origin `Origin`.
    Write,
}

/// Which token a request proved it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grade {
    Admin,
    Metrics,
}

/// The rules in force, replaced whole by a reload.
struct Rules {
    admin_token: Option<String>,
    metrics_token: Option<String>,
    /// Host names (lower case, no port, IPv6 without brackets) the listener answers to.
    hosts: Vec<String>,
}

impl Rules {
    fn new(config: &AdminConfig) -> Self {
        let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        let bound = bare_host(&config.host);
        // A wildcard bind names no host a client would write.
        if !matches!(bound.as_str(), "0.0.0.0" | "::" | "") {
            hosts.push(bound);
        }
        hosts.extend(config.allowed_hosts.iter().map(|h| bare_host(h)));
        hosts.sort();
        hosts.dedup();
        Rules {
            admin_token: config.token.clone(),
            metrics_token: config.metrics_token.clone(),
            hosts,
        }
    }

    fn grade(&self, given: &str) -> Option<Grade> {
        let same = |token: &Option<String>| {
            token
                .as_deref()
                .is_some_and(|t| bool::from(given.as_bytes().ct_eq(t.as_bytes())))
        };
        if same(&self.admin_token) {
            Some(Grade::Admin)
        } else if same(&self.metrics_token) {
            Some(Grade::Metrics)
        } else {
            None
        }
    }
}

/// The admin listener's gatekeeper; one per node, shared by every admin connection.
pub(crate) struct Guard {
    rules: ArcSwap<Rules>,
    /// The listener serves TLS: the console's cookie is marked `Secure`.
    tls: bool,
}

/// A refused admin request: its status and why, answered as JSON.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Denied {
    pub(crate) status: StatusCode,
    pub(crate) reason: &'static str,
}

impl Denied {
    fn new(status: StatusCode, reason: &'static str) -> Self {
        Denied { status, reason }
    }
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.reason }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

const NO_TOKEN: &str = "The admin endpoints need a token: Authorization: Bearer <token>, or open /console?token=<admin_token>";
const METRICS_ONLY: &str =
    "The metrics token opens /metrics only: the console and its writes need the admin token";
const FOREIGN_HOST: &str = "This Host is not one the admin listener answers to (a rebound name?): add it to admin_allowed_hosts";
const NOT_CONSOLE: &str = "A request that changes something must come from the console's own page (the X-Herald-Console header)";
const FOREIGN_ORIGIN: &str =
    "A request that changes something must come from the admin listener's own origin";

impl Guard {
    pub(crate) fn new(config: &AdminConfig) -> Self {
        Guard {
            rules: ArcSwap::from_pointee(Rules::new(config)),
            tls: config.tls.is_some(),
        }
    }

    /// Takes `config`'s tokens and hosts from the next request on.
    pub(crate) fn reload(&self, config: &AdminConfig) {
        self.rules.store(Arc::new(Rules::new(config)));
    }

    /// Whether the request may have what it asks for: the one check of every guarded admin
    /// route.
    pub(crate) fn authorize(&self, headers: &HeaderMap, need: Need) -> Result<(), Denied> {
        self.check(headers, need, None)
    }

    /// A `/console?token=…` visit: `Ok(Some(cookie))` to set when the token is the admin
    /// token, `Ok(None)` when none is configured (the page is served), refused otherwise.
    pub(crate) fn sign_in(
        &self,
        headers: &HeaderMap,
        given: &str,
    ) -> Result<Option<String>, Denied> {
        self.check(headers, Need::Read, Some(given))?;
        if self.rules.load().admin_token.is_none() {
            return Ok(None);
        }
        let cookie = Cookie::build((COOKIE, session_of(given)))
            .http_only(true)
            .same_site(SameSite::Strict)
            .secure(self.tls)
            .path("/console");
        Ok(Some(cookie.to_string()))
    }

    fn check(&self, headers: &HeaderMap, need: Need, offered: Option<&str>) -> Result<(), Denied> {
        let rules = self.rules.load();
        let by_header = bearer(headers).and_then(|t| rules.grade(t));
        if by_header.is_none() {
            host_allowed(&rules, headers)?;
        }
        // The cookie only ever proves the admin token; a metrics token opens nothing there.
        let by_cookie = console_cookie(headers)
            .zip(rules.admin_token.as_deref())
            .is_some_and(|(cookie, token)| {
                bool::from(cookie.as_bytes().ct_eq(session_of(token).as_bytes()))
            })
            .then_some(Grade::Admin)
            .or_else(|| {
                offered
                    .and_then(|t| rules.grade(t))
                    .filter(|g| *g == Grade::Admin)
            });
        let grade = by_header.or(by_cookie);
        let open = match need {
            Need::Metrics => {
                (rules.admin_token.is_none() && rules.metrics_token.is_none()) || grade.is_some()
            }
            Need::Read | Need::Write => rules.admin_token.is_none() || grade == Some(Grade::Admin),
        };
        if !open {
            return Err(if grade == Some(Grade::Metrics) {
                Denied::new(StatusCode::FORBIDDEN, METRICS_ONLY)
            } else {
                Denied::new(StatusCode::UNAUTHORIZED, NO_TOKEN)
            });
        }
        if need == Need::Write {
            same_origin_write(headers)?;
        }
        Ok(())
    }
}

/// What the console's cookie holds for `token`: an HMAC keyed by it, so the browser never
/// stores the token (which also opens `/metrics`), and a new token makes old cookies
/// worthless.
fn session_of(token: &str) -> String {
    herald_protocol::signing::sign(token, "herald console session")
}

/// The token of an `Authorization: Bearer …` header (the scheme in any case).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The console cookie's value, parsed by the `cookie` crate from every `Cookie` header.
fn console_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == COOKIE)
        .map(|c| c.value().to_owned())
}

/// `host` (of a `Host` header, an `Origin` or a config key) in lower case, without its
/// port, an IPv6 address without brackets, with no trailing dot.
fn bare_host(host: &str) -> String {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else if host.matches(':').count() > 1 {
        // An IPv6 address as written in a config key, without brackets or port.
        host
    } else {
        host.split(':').next().unwrap_or_default()
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn host_allowed(rules: &Rules, headers: &HeaderMap) -> Result<(), Denied> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(bare_host)
        .unwrap_or_default();
    if rules.hosts.contains(&host) {
        Ok(())
    } else {
        Err(Denied::new(StatusCode::FORBIDDEN, FOREIGN_HOST))
    }
}

/// A write carries the console's header, and comes from the listener's own origin when
/// the browser says where it comes from (`Origin`, `Sec-Fetch-Site`).
fn same_origin_write(headers: &HeaderMap) -> Result<(), Denied> {
    if !headers.contains_key(WRITE_HEADER) {
        return Err(Denied::new(StatusCode::FORBIDDEN, NOT_CONSOLE));
    }
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        if !matches!(site, "same-origin" | "none") {
            return Err(Denied::new(StatusCode::FORBIDDEN, FOREIGN_ORIGIN));
        }
    }
    if headers.contains_key(header::ORIGIN) {
        // `Origin: null` (a sandboxed frame, a file) and anything unreadable are foreign.
        let origin = text(header::ORIGIN)
            .and_then(|o| o.split_once("://"))
            .map(|(_, authority)| authority.to_ascii_lowercase());
        let host = text(header::HOST).map(str::to_ascii_lowercase);
        if origin.is_none() || origin != host {
            return Err(Denied::new(StatusCode::FORBIDDEN, FOREIGN_ORIGIN));
        }
    }
    Ok(())
}

/// The headers every admin answer carries: the console's page loads only its own script
/// and style, talks only to its own origin, and cannot be framed; nothing is sniffed into
/// another type or read by another origin's page.
pub(crate) async fn harden(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(toml: &str) -> Guard {
        let config = crate::Config::from_toml(toml, &|_| None).expect("valid");
        Guard::new(&config.admin)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                header::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    const ADMIN: &str = "admin-token-0123456789";
    const METRICS: &str = "metrics-token-0123456789";

    #[test]
    fn hosts_are_the_loopback_names_the_bind_address_and_the_listed_ones() {
        let g = guard("admin_allowed_hosts = [\"Console.Example.\"]\n");
        for host in [
            "localhost:9601",
            "127.0.0.1:9601",
            "[::1]:9601",
            "console.example",
            "CONSOLE.example:443",
        ] {
            assert_eq!(
                g.authorize(&headers(&[("host", host)]), Need::Read),
                Ok(()),
                "{host}"
            );
        }
        for host in [
            "evil.example:9601",
            "127.0.0.2",
            "localhost.evil.example",
            "",
        ] {
            let denied = g.authorize(&headers(&[("host", host)]), Need::Read);
            assert_eq!(
                denied.map_err(|d| d.status),
                Err(StatusCode::FORBIDDEN),
                "{host}"
            );
        }
        assert!(
            g.authorize(&HeaderMap::new(), Need::Read).is_err(),
            "no Host"
        );
    }

    #[test]
    fn each_token_opens_what_it_should_and_a_bearer_skips_the_host() {
        let g = guard(&format!(
            "admin_token = \"{ADMIN}\"\nmetrics_token = \"{METRICS}\"\n"
        ));
        let local = ("host", "127.0.0.1:9601");
        let status =
            |h: &[(&str, &str)], need| g.authorize(&headers(h), need).map_err(|d| d.status);
        let admin = format!("bearer {ADMIN}");
        let metrics = format!("Bearer {METRICS}");
        assert_eq!(
            status(&[local], Need::Metrics),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(&[("authorization", &metrics)], Need::Metrics),
            Ok(())
        );
        assert_eq!(status(&[("authorization", &admin)], Need::Metrics), Ok(()));
        assert_eq!(
            status(&[local, ("authorization", &metrics)], Need::Read),
            Err(StatusCode::FORBIDDEN)
        );
        let cookie = format!("a=b; herald_console={}", session_of(ADMIN));
        assert_eq!(status(&[local, ("cookie", &cookie)], Need::Read), Ok(()));
        // A cookie is a browser's ambient credential: the Host still counts.
        assert_eq!(
            status(&[("host", "evil.example"), ("cookie", &cookie)], Need::Read),
            Err(StatusCode::FORBIDDEN)
        );
        for cookie in [
            format!("herald_console={ADMIN}"),
            format!("herald_console={METRICS}"),
            format!("herald_console={}", session_of(METRICS)),
        ] {
            assert_eq!(
                status(&[local, ("cookie", &cookie)], Need::Read),
                Err(StatusCode::UNAUTHORIZED),
                "{cookie}"
            );
        }
        g.reload(
            &crate::Config::from_toml(&format!("admin_token = \"{METRICS}-new\"\n"), &|_| None)
                .expect("valid")
                .admin,
        );
        assert_eq!(
            status(&[("authorization", &admin)], Need::Metrics),
            Err(StatusCode::FORBIDDEN),
            "the old token is refused at once (and so is its foreign Host)"
        );
    }

    #[test]
    fn a_write_needs_the_consoles_header_and_its_own_origin() {
        let g = guard("");
        let local = ("host", "127.0.0.1:9601");
        let mark = (WRITE_HEADER, "1");
        let status =
            |h: &[(&str, &str)]| g.authorize(&headers(h), Need::Write).map_err(|d| d.status);
        assert_eq!(status(&[local, mark]), Ok(()));
        assert_eq!(
            status(&[local, mark, ("origin", "http://127.0.0.1:9601")]),
            Ok(())
        );
        assert_eq!(
            status(&[local, mark, ("sec-fetch-site", "same-origin")]),
            Ok(())
        );
        for refused in [
            vec![local],
            vec![local, ("origin", "http://127.0.0.1:9601")],
            vec![local, mark, ("origin", "http://evil.example")],
            vec![local, mark, ("origin", "http://127.0.0.1:8080")],
            vec![local, mark, ("origin", "null")],
            vec![local, mark, ("sec-fetch-site", "same-site")],
        ] {
            assert_eq!(status(&refused), Err(StatusCode::FORBIDDEN), "{refused:?}");
        }
    }

    #[test]
    fn signing_in_sets_a_strict_http_only_cookie() {
        let g = guard(&format!("admin_token = \"{ADMIN}\"\n"));
        let local = headers(&[("host", "localhost:9601")]);
        let cookie = g
            .sign_in(&local, ADMIN)
            .expect("signed in")
            .expect("a cookie");
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        assert!(
            !cookie.contains(ADMIN),
            "the token itself is not stored: {cookie}"
        );
        assert_eq!(
            g.sign_in(&local, "wrong").map_err(|d| d.status),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(guard("").sign_in(&local, "anything"), Ok(None));
    }
}
