//! `herald webhooks list | show | retry | purge`: the webhook queue of a running node,
//! through its admin listener's `/api/webhooks/{app}` (the node's admin token, and the
//! `X-Herald-Console` header its writes need).
//!
//! Failures print one line to stderr. Exit codes: 1 when the request failed (the node said
//! no, or could not be reached), 2 when the input is wrong.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

/// How long one request to the admin listener may take.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Args)]
pub struct WebhooksArgs {
    /// The node's admin listener.
    #[arg(
        long,
        env = "HERALD_ADMIN_URL",
        default_value = "http://127.0.0.1:9601",
        value_name = "URL",
        global = true
    )]
    admin: String,
    /// The node's `admin_token`, when it has one.
    #[arg(
        long,
        env = "HERALD_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        global = true
    )]
    admin_token: Option<String>,
    /// PEM file of a CA certificate to trust for an https:// admin listener.
    #[arg(
        long,
        env = "HERALD_CA_CERT",
        hide_env_values = true,
        value_name = "PEM",
        global = true
    )]
    ca_cert: Option<std::path::PathBuf>,
    /// Print the node's JSON answer instead of a readable summary.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: WebhooksCommand,
}

impl WebhooksArgs {
    /// Takes the options given before the command (`herald --json webhooks list`).
    pub fn also(&mut self, ca_cert: Option<std::path::PathBuf>, json: bool) {
        self.ca_cert = crate::merge(ca_cert, self.ca_cert.take(), "HERALD_CA_CERT");
        self.json |= json;
    }
}

/// Which batches: of one app, and of one of its endpoints or all.
#[derive(Args)]
struct Scope {
    /// The app's id.
    #[arg(long)]
    app: String,
    /// Only the batches to this endpoint (its URL as configured).
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
}

#[derive(Subcommand)]
enum WebhooksCommand {
    /// List an app's batches, pending and dead letters, oldest first (a page at a time).
    List {
        #[command(flatten)]
        scope: Scope,
        /// Only `pending` batches (in retry included) or `dead` letters.
        #[arg(long, value_parser = ["pending", "dead"])]
        state: Option<String>,
        /// The page after this batch id (the `next` of the previous page).
        #[arg(long, value_name = "ID")]
        after: Option<u64>,
        /// At most this many (1 to 100).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one batch: its body, attempts, last status or error, next attempt.
    Show {
        /// The app's id.
        #[arg(long)]
        app: String,
        /// The batch id (its X-Herald-Webhook-Id).
        id: u64,
    },
    /// Make dead letters pending again and deliver them now (receivers see the same
    /// X-Herald-Webhook-Id): one, or with --all every dead letter of the app (or of
    /// --endpoint).
    Retry {
        #[command(flatten)]
        scope: Scope,
        /// The dead letter's id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<u64>,
        /// Every dead letter of the app (or of --endpoint).
        #[arg(long)]
        all: bool,
    },
    /// Remove an app's dead letters (or one endpoint's); with --pending its pending
    /// batches too, which are then never delivered.
    Purge {
        #[command(flatten)]
        scope: Scope,
        /// Also remove the batches waiting for delivery.
        #[arg(long)]
        pending: bool,
    },
}

/// A request to the admin listener: its method, path (after `/api/webhooks/`, as segments
/// each percent-encoded whole) and query.
struct Ask {
    write: bool,
    path: Vec<String>,
    query: Vec<(&'static str, String)>,
}

pub fn run(args: WebhooksArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("herald webhooks: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run_async(args))
}

async fn run_async(args: WebhooksArgs) -> ExitCode {
    let client = match client(args.ca_cert.as_deref()) {
        Ok(client) => client,
        Err(message) => {
            eprintln!("herald webhooks: {message}");
            return ExitCode::from(2);
        }
    };
    let ask = ask(&args.command);
    let base = args.admin.trim_end_matches('/');
    let url = reqwest::Url::parse(base).ok().and_then(|mut url| {
        url.path_segments_mut()
            .ok()?
            .pop_if_empty()
            .extend(["api", "webhooks"])
            .extend(&ask.path);
        Some(url)
    });
    let Some(url) = url.filter(|u| matches!(u.scheme(), "http" | "https")) else {
        eprintln!("herald webhooks: --admin {base} is not an http(s) URL");
        return ExitCode::from(2);
    };
    let request = if ask.write {
        client.post(url).header("X-Herald-Console", "herald-cli")
    } else {
        client.get(url)
    };
    let request = match &args.admin_token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    let answer = match request.query(&ask.query).send().await {
        Ok(answer) => answer,
        Err(error) => {
            eprintln!(
                "herald webhooks: cannot reach the admin listener at {base} (--admin, HERALD_ADMIN_URL): {}",
                error.without_url()
            );
            return ExitCode::FAILURE;
        }
    };
    let status = answer.status();
    let body: Value = match answer.json().await {
        Ok(body) => body,
        Err(_) => Value::Null,
    };
    if !status.is_success() {
        let reason = body["error"]
            .as_str()
            .map_or_else(|| status.to_string(), str::to_owned);
        eprintln!("herald webhooks: {status}: {reason}");
        return ExitCode::FAILURE;
    }
    if args.json {
        println!("{body}");
    } else {
        print!("{}", readable(&args.command, &body));
    }
    ExitCode::SUCCESS
}

fn client(ca_cert: Option<&std::path::Path>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read --ca-cert {}: {e}", path.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| format!("--ca-cert {} is not a PEM certificate: {e}", path.display()))?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build().map_err(|e| e.to_string())
}

fn ask(command: &WebhooksCommand) -> Ask {
    let endpoint = |scope: &Scope| scope.endpoint.clone().map(|e| ("endpoint", e));
    match command {
        WebhooksCommand::List {
            scope,
            state,
            after,
            limit,
        } => Ask {
            write: false,
            path: vec![scope.app.clone()],
            query: endpoint(scope)
                .into_iter()
                .chain(state.clone().map(|s| ("state", s)))
                .chain(after.map(|a| ("after", a.to_string())))
                .chain([("limit", limit.to_string())])
                .collect(),
        },
        WebhooksCommand::Show { app, id } => Ask {
            write: false,
            path: vec![app.clone(), id.to_string()],
            query: Vec::new(),
        },
        WebhooksCommand::Retry { scope, id, .. } => Ask {
            write: true,
            path: match id {
                Some(id) => vec![scope.app.clone(), id.to_string(), "retry".into()],
                None => vec![scope.app.clone(), "retry".into()],
            },
            query: endpoint(scope).into_iter().collect(),
        },
        WebhooksCommand::Purge { scope, pending } => Ask {
            write: true,
            path: vec![scope.app.clone(), "purge".into()],
            query: endpoint(scope)
                .into_iter()
                .chain(pending.then(|| ("pending", "true".to_owned())))
                .collect(),
        },
    }
}

/// Milliseconds since the epoch as "N s ago" (or "in N s").
fn since(ms: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    if ms > now {
        format!("in {} s", (ms - now).div_ceil(1000))
    } else {
        format!("{} s ago", (now - ms) / 1000)
    }
}

/// One batch's line: id, state, attempts, the last status or error, age, endpoint.
fn line(batch: &Value) -> String {
    let last = match (batch["last_status"].as_u64(), batch["last_error"].as_str()) {
        (Some(status), _) => status.to_string(),
        (None, Some(error)) => error.to_owned(),
        (None, None) => "-".to_owned(),
    };
    // A dead letter retried on a cluster has a new place in the queue, and its first id.
    let id = match batch["sent_as"].as_str() {
        Some(sent_as) => format!(
            "{} (sent as {sent_as})",
            batch["id"].as_str().unwrap_or("?")
        ),
        None => batch["id"].as_str().unwrap_or("?").to_owned(),
    };
    format!(
        "{}  {:<7}  attempts {}  last {}  written {}  {}  channels {}\n",
        id,
        batch["state"].as_str().unwrap_or("?"),
        batch["attempts"],
        last,
        since(batch["created_ms"].as_u64().unwrap_or(0)),
        batch["url"].as_str().unwrap_or("?"),
        batch["channels"]
            .as_array()
            .map(|c| c
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","))
            .unwrap_or_default(),
    )
}

fn readable(command: &WebhooksCommand, body: &Value) -> String {
    match command {
        WebhooksCommand::List { .. } => {
            let batches = body["batches"].as_array().cloned().unwrap_or_default();
            let mut out: String = batches.iter().map(line).collect();
            if batches.is_empty() {
                out.push_str("no batches\n");
            }
            if let Some(next) = body["next"].as_str() {
                out.push_str(&format!("more: --after {next}\n"));
            }
            out
        }
        WebhooksCommand::Show { .. } => {
            let mut out = line(body);
            if let Some(error) = body["last_error"].as_str() {
                out.push_str(&format!("last error: {error}\n"));
            }
            match body["dead_ms"].as_u64() {
                Some(dead) => out.push_str(&format!("dead letter since {}\n", since(dead))),
                None => out.push_str(&format!(
                    "next attempt: {}\n",
                    match body["next_attempt_ms"].as_u64() {
                        Some(0) | None => "now".to_owned(),
                        Some(at) => since(at),
                    }
                )),
            }
            out.push_str(body["body"].as_str().unwrap_or(""));
            out.push('\n');
            out
        }
        WebhooksCommand::Retry { .. } => {
            let ids = body["retried"].as_array().cloned().unwrap_or_default();
            let ids: Vec<&str> = ids.iter().filter_map(Value::as_str).collect();
            match ids.len() {
                0 => "no dead letters to retry\n".to_owned(),
                n => format!("retried {n}: {}\n", ids.join(" ")),
            }
        }
        WebhooksCommand::Purge { .. } => format!("purged {}\n", body["purged"]),
    }
}
