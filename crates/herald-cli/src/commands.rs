//! The API commands (`herald trigger`, `herald channels`, `herald history`, ...): argument glue over the SDK.
//!
//! Failures print one line to stderr. Exit codes: 1 when the request failed (the server
//! said no, or could not be reached), 2 when the input or configuration is wrong.

use std::io::{BufRead, Read};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use herald_sdk::{BatchEvent, Client, Error, EventData, HistoryQuery, TriggerParams};
use serde_json::{json, Value};

/// Where the app is and how to sign for it: every API command takes these after its name
/// (and `herald` before it). No `Debug`: the URL holds the secret.
#[derive(Args)]
pub struct Connection {
    /// `http(s)://KEY:SECRET@HOST[:PORT]/apps/APP_ID`, as `herald serve` prints it.
    #[arg(long, env = "PUSHER_URL", hide_env_values = true, global = true)]
    url: Option<String>,
    /// PEM file of a CA certificate to trust for https:// besides the system's roots (for a
    /// server whose certificate a private CA signed).
    #[arg(
        long,
        env = "HERALD_CA_CERT",
        hide_env_values = true,
        global = true,
        value_name = "PEM"
    )]
    ca_cert: Option<std::path::PathBuf>,
    /// Print JSON instead of a readable summary.
    #[arg(long, global = true)]
    json: bool,
}

impl Connection {
    /// Takes the options given before the command (`herald --url … trigger`); see
    /// [`crate::merge`] for which wins.
    pub fn also(&mut self, url: Option<String>, ca_cert: Option<std::path::PathBuf>, json: bool) {
        self.url = crate::merge(url, self.url.take(), "PUSHER_URL");
        self.ca_cert = crate::merge(ca_cert, self.ca_cert.take(), "HERALD_CA_CERT");
        self.json |= json;
    }
}

/// The API commands.
#[derive(Subcommand)]
pub enum ApiCommand {
    /// Trigger an event on one or more channels.
    Trigger {
        #[command(flatten)]
        on: Connection,
        /// Channel names, comma-separated or repeated: `-c a,b` or `-c a -c b` (up to 100;
        /// a name with a comma in it goes through `herald batch`).
        #[arg(long = "channel", short = 'c', required = true, value_delimiter = ',')]
        channels: Vec<String>,
        /// Event name.
        #[arg(long, short = 'e')]
        event: String,
        /// Event data, sent verbatim.
        #[arg(long, short = 'd')]
        data: String,
        /// Exclude this socket id.
        #[arg(long)]
        socket_id: Option<String>,
        /// Attributes to return: user_count, subscription_count.
        #[arg(long, value_delimiter = ',')]
        info: Vec<String>,
    },
    /// Trigger a batch read from stdin: one JSON object per line
    /// (`{"channel":..,"name":..,"data":..}`).
    Batch {
        #[command(flatten)]
        on: Connection,
    },
    /// List occupied channels.
    Channels {
        #[command(flatten)]
        on: Connection,
        /// Only channels starting with this prefix.
        #[arg(long)]
        prefix: Option<String>,
        /// Attributes: user_count (needs --prefix presence-), subscription_count.
        #[arg(long, value_delimiter = ',')]
        info: Vec<String>,
    },
    /// Show one channel.
    Channel {
        #[command(flatten)]
        on: Connection,
        /// The channel.
        name: String,
        /// Attributes: user_count, subscription_count, cache.
        #[arg(long, value_delimiter = ',')]
        info: Vec<String>,
    },
    /// List the users of a presence channel.
    Users {
        #[command(flatten)]
        on: Connection,
        /// The presence channel.
        channel: String,
    },
    /// Show the events a channel kept, oldest first, with their serials (the app needs
    /// `history_max_events` set).
    History {
        #[command(flatten)]
        on: Connection,
        /// The channel.
        channel: String,
        /// At most this many events (1 to 1000; the server's default is 100).
        #[arg(long)]
        limit: Option<usize>,
        /// Only events with a serial below this one (page backward).
        #[arg(long, value_name = "SERIAL")]
        before: Option<u64>,
        /// Only events with a serial above this one (page forward).
        #[arg(long, value_name = "SERIAL")]
        after: Option<u64>,
    },
    /// Send an event to every connection signed in as a user.
    SendToUser {
        #[command(flatten)]
        on: Connection,
        /// The user id.
        user: String,
        /// Event name.
        #[arg(long, short = 'e')]
        event: String,
        /// Event data, sent verbatim.
        #[arg(long, short = 'd')]
        data: String,
    },
    /// Close every connection signed in as a user.
    Terminate {
        #[command(flatten)]
        on: Connection,
        /// The user id.
        user: String,
    },
    /// Print the auth response for a channel subscription or a user sign-in.
    Auth {
        #[command(flatten)]
        on: Connection,
        /// The connection's socket id.
        #[arg(long)]
        socket_id: String,
        /// Channel to authorize.
        #[arg(long, conflicts_with = "user")]
        channel: Option<String>,
        /// Presence member JSON (`{"user_id":..,"user_info":..}`).
        #[arg(long, requires = "channel")]
        channel_data: Option<String>,
        /// User JSON to sign in (`{"id":..}`).
        #[arg(long)]
        user: Option<String>,
    },
    /// Webhook tools.
    Webhook {
        #[command(flatten)]
        on: Connection,
        #[command(subcommand)]
        command: WebhookCommand,
    },
}

impl ApiCommand {
    /// The options every API command takes.
    pub fn connection(&mut self) -> &mut Connection {
        match self {
            ApiCommand::Trigger { on, .. }
            | ApiCommand::Batch { on }
            | ApiCommand::Channels { on, .. }
            | ApiCommand::Channel { on, .. }
            | ApiCommand::Users { on, .. }
            | ApiCommand::History { on, .. }
            | ApiCommand::SendToUser { on, .. }
            | ApiCommand::Terminate { on, .. }
            | ApiCommand::Auth { on, .. }
            | ApiCommand::Webhook { on, .. } => on,
        }
    }
}

/// Webhook tools.
#[derive(Subcommand, Debug)]
pub enum WebhookCommand {
    /// Verify a webhook: the body on stdin, its signature headers as flags.
    Verify {
        /// The X-Pusher-Key header.
        #[arg(long)]
        key: String,
        /// The X-Pusher-Signature header.
        #[arg(long)]
        signature: String,
        /// The Content-Type header.
        #[arg(long, default_value = "application/json")]
        content_type: String,
        /// Refuse a webhook whose `time_ms` is further than this many seconds from now (a
        /// stale or replayed body); 0 accepts any age.
        #[arg(long, value_name = "SECONDS", default_value_t = 300)]
        max_age: u64,
    },
}

/// Runs an API command and turns the outcome into an exit code.
pub fn run(mut command: ApiCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => return fail(2, &format!("cannot start the async runtime: {error}")),
    };
    let json = command.connection().json;
    match runtime.block_on(execute(command)) {
        Ok(output) => {
            print(&output, json);
            ExitCode::SUCCESS
        }
        Err(Failure(code, message)) => fail(code, &message),
    }
}

struct Failure(u8, String);

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        let code = match error {
            Error::Http { .. }
            | Error::Network { .. }
            | Error::Timeout { .. }
            | Error::Decode { .. } => 1,
            _ => 2,
        };
        // The causes too: "error sending request" alone does not say that a certificate
        // was refused. One line: server bodies can span several.
        let mut message = error.to_string();
        let mut cause = std::error::Error::source(&error);
        while let Some(inner) = cause {
            let text = inner.to_string();
            if !message.contains(&text) {
                message.push_str(&format!(": {text}"));
            }
            cause = inner.source();
        }
        Failure(code, message.replace('\n', " "))
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("herald: {message}");
    ExitCode::from(code)
}

fn client(credentials: &Connection) -> Result<Client, Failure> {
    let url = credentials.url.as_deref().ok_or_else(|| {
        Failure(
            2,
            "no credentials: set PUSHER_URL or pass --url http://KEY:SECRET@HOST:PORT/apps/ID"
                .into(),
        )
    })?;
    let builder = Client::builder_from_url(url)?;
    if let Some(path) = &credentials.ca_cert {
        let pem = std::fs::read(path).map_err(|e| {
            Failure(
                2,
                format!("cannot read the CA certificate {}: {e}", path.display()),
            )
        })?;
        // The URL is already checked: what the build refuses now is the certificate.
        return builder
            .root_certificate_pem(pem)
            .build()
            .map_err(|error| match error {
                Error::Config(problem) => Failure(2, format!("{}: {problem}", path.display())),
                other => other.into(),
            });
    }
    Ok(builder.build()?)
}

async fn execute(mut command: ApiCommand) -> Result<Value, Failure> {
    let client = client(command.connection())?;
    Ok(match command {
        ApiCommand::Trigger {
            channels,
            event,
            data,
            socket_id,
            info,
            ..
        } => {
            let mut params = TriggerParams::default().info(info);
            params.socket_id = socket_id;
            let reply = client
                .trigger_with(&channels, &event, EventData::Text(data), params)
                .await?;
            let attrs: serde_json::Map<String, Value> = reply
                .channels
                .into_iter()
                .map(|(name, a)| (name, json!({"user_count": a.user_count, "subscription_count": a.subscription_count})))
                .collect();
            if attrs.is_empty() {
                json!({"ok": true})
            } else {
                json!({"ok": true, "channels": attrs})
            }
        }
        ApiCommand::Batch { .. } => {
            let mut events = Vec::new();
            for (i, line) in std::io::stdin().lock().lines().enumerate() {
                let line = line.map_err(|e| Failure(2, format!("cannot read stdin: {e}")))?;
                if line.trim().is_empty() {
                    continue;
                }
                let v: Value = serde_json::from_str(&line)
                    .map_err(|e| Failure(2, format!("line {}: not JSON: {e}", i + 1)))?;
                let field = |name: &str| {
                    v.get(name)
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| {
                            Failure(2, format!("line {}: '{name}' must be a string", i + 1))
                        })
                };
                let data = match v.get("data") {
                    Some(Value::String(s)) => EventData::Text(s.clone()),
                    Some(other) => EventData::Json(other.clone()),
                    None => return Err(Failure(2, format!("line {}: 'data' is required", i + 1))),
                };
                let mut event = BatchEvent::new(field("channel")?, field("name")?, data);
                event.socket_id = v
                    .get("socket_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                event.info = v.get("info").and_then(Value::as_str).map(str::to_owned);
                events.push(event);
            }
            let reply = client.trigger_batch(&events).await?;
            json!({"ok": true, "events": events.len(), "batch": reply.batch.len()})
        }
        ApiCommand::Channels { prefix, info, .. } => {
            let info: Vec<&str> = info.iter().map(String::as_str).collect();
            let channels = client.channels(prefix.as_deref(), &info).await?;
            let map: serde_json::Map<String, Value> = channels
                .into_iter()
                .map(|(name, a)| (name, json!({"user_count": a.user_count, "subscription_count": a.subscription_count})))
                .collect();
            json!({"channels": map})
        }
        ApiCommand::Channel { name, info, .. } => {
            let info: Vec<&str> = info.iter().map(String::as_str).collect();
            let c = client.channel(&name, &info).await?;
            json!({"channel": name, "occupied": c.occupied, "user_count": c.user_count, "subscription_count": c.subscription_count, "cache": c.cache})
        }
        ApiCommand::Users { channel, .. } => json!({"users": client.users(&channel).await?}),
        ApiCommand::History {
            channel,
            limit,
            before,
            after,
            ..
        } => {
            let mut query = HistoryQuery::new();
            query.limit = limit;
            query.before = before;
            query.after = after;
            let page = client.history(&channel, &query).await?;
            serde_json::to_value(page).map_err(|e| Failure(2, e.to_string()))?
        }
        ApiCommand::SendToUser {
            user, event, data, ..
        } => {
            client
                .send_to_user(&user, &event, EventData::Text(data))
                .await?;
            json!({"ok": true})
        }
        ApiCommand::Terminate { user, .. } => {
            client.terminate_user_connections(&user).await?;
            json!({"ok": true})
        }
        ApiCommand::Auth {
            socket_id,
            channel,
            channel_data,
            user,
            ..
        } => match (channel, user) {
            (Some(channel), None) => {
                if channel.starts_with("presence-") && channel_data.is_none() {
                    return Err(Failure(
                        2,
                        format!("--channel {channel} needs --channel-data '{{\"user_id\":\"…\",\"user_info\":{{…}}}}': a presence subscription signs its member"),
                    ));
                }
                let member = channel_data
                    .map(|d| serde_json::from_str::<Value>(&d))
                    .transpose()
                    .map_err(|e| Failure(2, format!("--channel-data is not JSON: {e}")))?;
                serde_json::to_value(client.authorize_channel(
                    &socket_id,
                    &channel,
                    member.as_ref(),
                )?)
                .map_err(|e| Failure(2, e.to_string()))?
            }
            (None, Some(user)) => {
                let user: Value = serde_json::from_str(&user)
                    .map_err(|e| Failure(2, format!("--user is not JSON: {e}")))?;
                serde_json::to_value(client.authenticate_user(&socket_id, &user)?)
                    .map_err(|e| Failure(2, e.to_string()))?
            }
            _ => {
                return Err(Failure(
                    2,
                    "give --channel (with optional --channel-data) or --user".into(),
                ))
            }
        },
        ApiCommand::Webhook {
            command:
                WebhookCommand::Verify {
                    key,
                    signature,
                    content_type,
                    max_age,
                },
            ..
        } => {
            let mut body = Vec::new();
            std::io::stdin()
                .read_to_end(&mut body)
                .map_err(|e| Failure(2, format!("cannot read stdin: {e}")))?;
            let headers = [
                ("x-pusher-key", key.as_str()),
                ("x-pusher-signature", signature.as_str()),
                ("content-type", content_type.as_str()),
            ];
            let hook = client
                .webhook(headers, &body)
                .map_err(|e| Failure(1, e.to_string()))?;
            let age = Age::of(hook.time_ms);
            if max_age > 0 && age.seconds.unsigned_abs() > max_age {
                return Err(Failure(
                    1,
                    format!(
                        "the signature is valid, but the webhook was sent {age} (time_ms {}), over --max-age {max_age}: a stale or replayed body (--max-age 0 accepts any age)",
                        hook.time_ms
                    ),
                ));
            }
            let events: Vec<String> = hook.events.iter().map(|e| format!("{e:?}")).collect();
            json!({"valid": true, "sent": age.to_string(), "age_s": age.seconds, "time_ms": hook.time_ms, "events": events})
        }
    })
}

/// How long ago a webhook was sent, by the clocks of its sender and of this machine.
struct Age {
    /// Seconds since `time_ms`; negative for a time in the future.
    seconds: i64,
}

impl Age {
    fn of(time_ms: u64) -> Age {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let millis = i128::try_from(now).unwrap_or(i128::MAX) - i128::from(time_ms);
        Age {
            seconds: i64::try_from(millis / 1000).unwrap_or(i64::MIN),
        }
    }
}

/// "3 minutes ago", "2 hours from now": the largest whole unit.
impl std::fmt::Display for Age {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const UNITS: [(&str, u64); 5] = [
            ("year", 31_557_600),
            ("day", 86_400),
            ("hour", 3_600),
            ("minute", 60),
            ("second", 1),
        ];
        let seconds = self.seconds.unsigned_abs();
        let (unit, size) = UNITS
            .into_iter()
            .find(|(_, size)| seconds >= *size)
            .unwrap_or(("second", 1));
        let count = seconds / size;
        let plural = if count == 1 { "" } else { "s" };
        let when = if self.seconds < 0 { "from now" } else { "ago" };
        write!(f, "{count} {unit}{plural} {when}")
    }
}

fn print(output: &Value, as_json: bool) {
    if as_json {
        println!("{output}");
        return;
    }
    match output {
        Value::Object(map) => {
            for (key, value) in map {
                match value {
                    Value::Object(inner) if !inner.is_empty() => {
                        println!("{key}:");
                        for (k, v) in inner {
                            println!("  {k}  {}", compact(v));
                        }
                    }
                    Value::Array(items) if !items.is_empty() => {
                        println!("{key}:");
                        for item in items {
                            println!("  {}", compact(item));
                        }
                    }
                    // An empty list says so, rather than leaving "key:" with nothing.
                    Value::Object(_) | Value::Array(_) => println!("{key}: none"),
                    _ => println!("{key}: {}", compact(value)),
                }
            }
        }
        other => println!("{other}"),
    }
}

fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(map) => map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| format!("{k}={}", compact(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}
