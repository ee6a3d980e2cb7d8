//! `redis_url`, parsed: one server, a Redis Cluster's seed nodes, or the sentinels of a
//! monitored master.
//!
//! Syntax (the `s` of `rediss` is TLS, wherever it appears):
//! - `redis://[user:pass@]host[:port][/db]`, `rediss://…`, `unix:///path[?db=n]`: one
//!   server, read by the `redis` crate exactly as before;
//! - `redis+cluster://[user:pass@]host1:port1,host2:port2,…`: seed nodes of a Redis Cluster
//!   (any reachable one is enough; the others are found through it). No database: a
//!   cluster has only database 0. The credentials are every node's;
//! - `redis+sentinel://[user:pass@]host1:port1,host2:port2/<master name>[/db]
//!   [?sentinel_username=u&sentinel_password=p]`: the sentinels, then the name they monitor
//!   the master under. The credentials in front are the master's (and its replicas', which
//!   take over its role). Sentinels usually have no password of their own; when they do, it
//!   goes in `sentinel_password` (and `sentinel_username` with ACLs), because it is
//!   configured on them separately and is often not the master's. `rediss+sentinel` is TLS
//!   to the sentinels and to the master; `sentinel_tls=false` (or `true` after
//!   `redis+sentinel`) sets the sentinels' side alone.
//!
//! The client's `#insecure` fragment (no certificate check at all) is refused: the name
//! check is turned off in the configuration, where it shows (`TlsFiles`), and the chain is
//! always checked.
//!
//! Ports default to 6379 (servers) and 26379 (sentinels). User names and passwords may be
//! percent-encoded. Neither [`Target`]'s `Display` nor its `Debug` shows a password.

use std::fmt;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion};

/// Shown instead of a password.
const HIDDEN: &str = "<redacted>";

/// Where the cluster's Redis is.
#[derive(Clone)]
pub(crate) enum Target {
    /// One server, as before clusters and sentinels.
    Single(Box<ConnectionInfo>),
    /// A Redis Cluster, reached through any of its seed nodes.
    Cluster(Seeds),
    /// A master found, and followed across failovers, through its sentinels.
    Sentinel(SentinelSeeds),
}

/// A host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub host: String,
    pub port: u16,
}

/// Credentials for `AUTH`. `Debug` hides the password.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Auth {
    pub username: Option<String>,
    pub password: Option<String>,
}

/// A Redis Cluster's seed nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seeds {
    pub nodes: Vec<Node>,
    pub tls: bool,
    pub auth: Auth,
}

/// The sentinels of one master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SentinelSeeds {
    pub sentinels: Vec<Node>,
    /// The name the sentinels monitor the master under.
    pub master: String,
    pub db: i64,
    /// TLS to the master and its replicas.
    pub tls: bool,
    /// TLS to the sentinels.
    pub sentinel_tls: bool,
    /// The master's (and its replicas') credentials.
    pub auth: Auth,
    /// The sentinels' own credentials, if they have any.
    pub sentinel_auth: Auth,
}

/// Why a `redis_url` was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TargetError {
    #[error("expected a URL such as redis://host:6379/0, redis+cluster://host1:6379,host2:6379 or redis+sentinel://host1:26379,host2:26379/<master name>")]
    NoScheme,
    #[error("unknown scheme '{0}': use redis, rediss, unix, redis+cluster, rediss+cluster, redis+sentinel or rediss+sentinel")]
    UnknownScheme(String),
    #[error("{0}")]
    Single(String),
    #[error("no host given")]
    NoHosts,
    #[error("'{node}' is not host:port: {reason}")]
    BadNode { node: String, reason: &'static str },
    #[error("name the master after the sentinels: redis+sentinel://host:26379/<master name>")]
    NoMasterName,
    #[error("'{0}' is not a database number")]
    BadDb(String),
    #[error("a Redis Cluster has only database 0; remove '/{0}'")]
    ClusterDb(String),
    #[error("unexpected '/{0}' after the database number")]
    ExtraPath(String),
    #[error("unknown parameter '{0}' (known: sentinel_username, sentinel_password, sentinel_tls)")]
    UnknownParameter(String),
    #[error("sentinel_tls is true or false, not '{0}'")]
    BadSentinelTls(String),
    #[error("'#insecure' would turn off every certificate check; to skip only the server name check, set redis_tls_insecure_skip_name_check")]
    Insecure,
    #[error("the {0} is not valid percent-encoded UTF-8")]
    BadEncoding(&'static str),
    #[error("this build of the redis client has no TLS support")]
    NoTls,
}

impl Target {
    /// The database commands run against (always 0 on a cluster); the connections take
    /// it from their own settings, the tests from here.
    #[cfg(test)]
    pub(crate) fn db(&self) -> i64 {
        match self {
            Target::Single(info) => info.redis.db,
            Target::Cluster(_) => 0,
            Target::Sentinel(s) => s.db,
        }
    }

    /// Parses `redis_url`.
    pub(crate) fn parse(url: &str) -> Result<Target, TargetError> {
        let (scheme, rest) = url.split_once("://").ok_or(TargetError::NoScheme)?;
        match scheme {
            "redis" | "rediss" | "unix" | "redis+unix" => {
                let info = url
                    .into_connection_info()
                    .map_err(|e| TargetError::Single(e.to_string()))?;
                if let ConnectionAddr::TcpTls { insecure: true, .. } = info.addr {
                    return Err(TargetError::Insecure);
                }
                Ok(Target::Single(Box::new(info)))
            }
            "redis+cluster" | "rediss+cluster" => {
                let tls = tls(scheme)?;
                let parts = Parts::split(rest, 6379)?;
                if let Some((key, _)) = parts.query.first() {
                    return Err(TargetError::UnknownParameter(key.clone()));
                }
                match parts.path.as_slice() {
                    [] => {}
                    [db] if db == "0" => {}
                    [db, ..] => return Err(TargetError::ClusterDb(db.clone())),
                }
                Ok(Target::Cluster(Seeds {
                    nodes: parts.nodes,
                    tls,
                    auth: parts.auth,
                }))
            }
            "redis+sentinel" | "rediss+sentinel" => {
                let tls = tls(scheme)?;
                let parts = Parts::split(rest, 26379)?;
                let mut sentinel_auth = Auth::default();
                let mut sentinel_tls = tls;
                for (key, value) in parts.query {
                    match key.as_str() {
                        "sentinel_username" => sentinel_auth.username = Some(value),
                        "sentinel_password" => sentinel_auth.password = Some(value),
                        "sentinel_tls" => {
                            sentinel_tls = match value.as_str() {
                                "true" => tls_or_refuse(true)?,
                                "false" => false,
                                _ => return Err(TargetError::BadSentinelTls(value)),
                            }
                        }
                        _ => return Err(TargetError::UnknownParameter(key)),
                    }
                }
                let (master, db) = match parts.path.as_slice() {
                    [] => return Err(TargetError::NoMasterName),
                    [master] => (master.clone(), 0),
                    [master, db] => (master.clone(), parse_db(db)?),
                    [_, _, extra, ..] => return Err(TargetError::ExtraPath(extra.clone())),
                };
                if master.is_empty() {
                    return Err(TargetError::NoMasterName);
                }
                Ok(Target::Sentinel(SentinelSeeds {
                    sentinels: parts.nodes,
                    master,
                    db,
                    tls,
                    sentinel_tls,
                    auth: parts.auth,
                    sentinel_auth,
                }))
            }
            other => Err(TargetError::UnknownScheme(other.to_owned())),
        }
    }

    /// Whether connections use TLS: to the data nodes, and to the sentinels.
    pub(crate) fn tls_sides(&self) -> (bool, bool) {
        match self {
            Target::Single(info) => (matches!(info.addr, ConnectionAddr::TcpTls { .. }), false),
            Target::Cluster(seeds) => (seeds.tls, false),
            Target::Sentinel(seeds) => (seeds.tls, seeds.sentinel_tls),
        }
    }
}

impl Node {
    /// Connection details for this node with `auth`, speaking `protocol`.
    pub(crate) fn info(
        &self,
        tls: bool,
        auth: &Auth,
        db: i64,
        protocol: ProtocolVersion,
    ) -> ConnectionInfo {
        let addr = if tls {
            ConnectionAddr::TcpTls {
                host: self.host.clone(),
                port: self.port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(self.host.clone(), self.port)
        };
        ConnectionInfo {
            addr,
            redis: redis::RedisConnectionInfo {
                db,
                username: auth.username.clone(),
                password: auth.password.clone(),
                protocol,
            },
        }
    }
}

fn tls(scheme: &str) -> Result<bool, TargetError> {
    tls_or_refuse(scheme.starts_with("rediss"))
}

fn tls_or_refuse(tls: bool) -> Result<bool, TargetError> {
    // The client refuses rediss:// at parse time when it was built without TLS; ask it
    // rather than assume which features it has.
    if tls && "rediss://localhost".into_connection_info().is_err() {
        return Err(TargetError::NoTls);
    }
    Ok(tls)
}

fn parse_db(db: &str) -> Result<i64, TargetError> {
    db.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| TargetError::BadDb(db.to_owned()))
}

/// The parts of a multi-host URL after its scheme.
struct Parts {
    auth: Auth,
    nodes: Vec<Node>,
    /// Non-empty path segments.
    path: Vec<String>,
    query: Vec<(String, String)>,
}

impl Parts {
    fn split(rest: &str, default_port: u16) -> Result<Parts, TargetError> {
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let auth = match userinfo {
            None => Auth::default(),
            Some(userinfo) => {
                let (user, password) = match userinfo.split_once(':') {
                    Some((user, password)) => (user, Some(password)),
                    None => (userinfo, None),
                };
                Auth {
                    username: Some(decode(user, "user name")?).filter(|u| !u.is_empty()),
                    password: password.map(|p| decode(p, "password")).transpose()?,
                }
            }
        };
        let nodes = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| parse_node(h, default_port))
            .collect::<Result<Vec<_>, _>>()?;
        if nodes.is_empty() {
            return Err(TargetError::NoHosts);
        }
        let path = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| decode(s, "path"))
            .collect::<Result<_, _>>()?;
        let query = query
            .split('&')
            .filter(|s| !s.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                Ok((decode(key, "parameter")?, decode(value, "parameter")?))
            })
            .collect::<Result<_, _>>()?;
        Ok(Parts {
            auth,
            nodes,
            path,
            query,
        })
    }
}

fn parse_node(text: &str, default_port: u16) -> Result<Node, TargetError> {
    let bad = |reason| TargetError::BadNode {
        node: text.to_owned(),
        reason,
    };
    let (host, port) = if let Some(bracketed) = text.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| bad("an IPv6 address needs its closing ']'"))?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| bad("expected ':' after ']'"))?,
                ),
            ),
        }
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err(bad("the host is empty"));
    }
    let port = match port {
        None => default_port,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
    };
    Ok(Node {
        host: host.to_owned(),
        port,
    })
}

/// Percent-decodes `text`.
fn decode(text: &str, what: &'static str) -> Result<String, TargetError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(TargetError::BadEncoding(what))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| TargetError::BadEncoding(what))
}

/// Writes `user:<redacted>@` (or nothing) for `auth`.
fn write_auth(f: &mut fmt::Formatter<'_>, auth: &Auth) -> fmt::Result {
    match (&auth.username, &auth.password) {
        (None, None) => Ok(()),
        (user, Some(_)) => write!(f, "{}:{HIDDEN}@", user.as_deref().unwrap_or("")),
        (Some(user), None) => write!(f, "{user}@"),
    }
}

fn write_nodes(f: &mut fmt::Formatter<'_>, nodes: &[Node]) -> fmt::Result {
    for (i, node) in nodes.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        if node.host.contains(':') {
            write!(f, "{sep}[{}]:{}", node.host, node.port)?;
        } else {
            write!(f, "{sep}{}:{}", node.host, node.port)?;
        }
    }
    Ok(())
}

impl fmt::Display for Target {
    /// The URL, its passwords replaced.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Single(info) => {
                let auth = Auth {
                    username: info.redis.username.clone(),
                    password: info.redis.password.clone(),
                };
                match &info.addr {
                    ConnectionAddr::Unix(path) => {
                        write!(f, "unix://")?;
                        write_auth(f, &auth)?;
                        write!(f, "{}?db={}", path.display(), info.redis.db)
                    }
                    ConnectionAddr::Tcp(host, port) => {
                        write!(f, "redis://")?;
                        write_auth(f, &auth)?;
                        write_nodes(f, &[node(host, *port)])?;
                        write!(f, "/{}", info.redis.db)
                    }
                    ConnectionAddr::TcpTls { host, port, .. } => {
                        write!(f, "rediss://")?;
                        write_auth(f, &auth)?;
                        write_nodes(f, &[node(host, *port)])?;
                        write!(f, "/{}", info.redis.db)
                    }
                }
            }
            Target::Cluster(seeds) => {
                let s = if seeds.tls { "s" } else { "" };
                write!(f, "redis{s}+cluster://")?;
                write_auth(f, &seeds.auth)?;
                write_nodes(f, &seeds.nodes)
            }
            Target::Sentinel(seeds) => {
                let s = if seeds.tls { "s" } else { "" };
                write!(f, "redis{s}+sentinel://")?;
                write_auth(f, &seeds.auth)?;
                write_nodes(f, &seeds.sentinels)?;
                write!(f, "/{}/{}", seeds.master, seeds.db)?;
                let auth = &seeds.sentinel_auth;
                let mut sep = '?';
                if let Some(user) = &auth.username {
                    write!(f, "{sep}sentinel_username={user}")?;
                    sep = '&';
                }
                if auth.password.is_some() {
                    write!(f, "{sep}sentinel_password={HIDDEN}")?;
                    sep = '&';
                }
                if seeds.sentinel_tls != seeds.tls {
                    write!(f, "{sep}sentinel_tls={}", seeds.sentinel_tls)?;
                }
                Ok(())
            }
        }
    }
}

fn node(host: &str, port: u16) -> Node {
    Node {
        host: host.to_owned(),
        port,
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Target").field(&self.to_string()).finish()
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| HIDDEN))
            .finish()
    }
}

// This file is loaded with `#[path]`, so its own modules are found beside it, not under
// a folder named for it.
#[cfg(test)]
#[path = "target/tests.rs"]
mod tests;
