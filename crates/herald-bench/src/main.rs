//! `herald-bench`: measures a Pusher-compatible server (Herald or any peer) through its
//! public protocol only: fan-out latency and loss (many channels or one big room), presence
//! churn, HTTP trigger throughput, and the memory of held connections, with the server's
//! CPU and memory read from /proc when given its pid.
//!
//! Each run prints one JSON line (for scripts) on stdout and a readable summary on stderr.

mod churn;
mod hold;
mod http;
mod modes;
mod negotiate;
mod payload;
mod proc_stats;
mod progress;
mod publish;
mod scan;
mod soak;
mod storm;
mod stream;
mod summary;
mod window;
mod wsclient;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "herald-bench", about = "Benchmark a Pusher-compatible server")]
struct Cli {
    /// Server address (HTTP API and WebSocket on the same port).
    #[arg(long, default_value = "127.0.0.1:6001")]
    addr: SocketAddr,
    #[arg(long, default_value = "1")]
    app_id: String,
    #[arg(long, default_value = "app-key")]
    key: String,
    #[arg(long, default_value = "app-secret")]
    secret: String,
    /// The server's process id, to report its CPU time and memory; several (comma-separated)
    /// for a cluster's nodes, whose CPU and memory are summed.
    #[arg(long, value_delimiter = ',')]
    pid: Vec<u32>,
    /// Draw a progress bar on stderr while the run goes.
    #[arg(long)]
    progress: bool,
    /// Connect with TLS (wss:// and https://); the server's certificate must be signed by
    /// the `--ca` certificate and name the address's IP.
    #[arg(long, requires = "ca")]
    tls: bool,
    /// PEM file of the CA that signed the server's certificate (with `--tls`).
    #[arg(long, value_name = "PEM")]
    ca: Option<std::path::PathBuf>,
    /// Offer permessage-deflate (`permessage-deflate; client_max_window_bits`, as browsers
    /// do) on every WebSocket and inflate the compressed frames; the run fails if the server
    /// does not accept it.
    #[arg(long)]
    deflate: bool,
    /// Offer permessage-deflate as `--deflate` does, but take a server that declines it:
    /// the report's `deflate` says whether it was negotiated.
    #[arg(long)]
    deflate_optional: bool,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// N subscribers over K public channels; events published over HTTP at a fixed rate.
    Fanout {
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        #[arg(long, default_value_t = 10)]
        channels: usize,
        /// Events per second, all channels together.
        #[arg(long, default_value_t = 500)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 100)]
        payload: usize,
        /// What fills the payload: one letter repeated (compresses to nothing), or varied
        /// JSON that compresses like real events (2.6x at 1 KB, 4x at 4 KB).
        #[arg(long, value_enum, default_value = "padding")]
        payload_kind: payload::PayloadKind,
        /// Spread the subscribers round-robin over these addresses (a cluster's nodes);
        /// events are still published to `--addr` (or `--publish-to`).
        #[arg(long, value_delimiter = ',')]
        subscribe_to: Vec<SocketAddr>,
        /// Publish each channel's events to one of these addresses: channel c's to the
        /// (c mod count)-th. With the same list as `--subscribe-to` and `--channels` a
        /// multiple of its length, each node is published to for its own subscribers only.
        #[arg(long, value_delimiter = ',')]
        publish_to: Vec<SocketAddr>,
        /// Seconds of publishing before the measured window opens; the report's `window`
        /// then covers the `--seconds` after it, per node (`--pid` order).
        #[arg(long, default_value_t = 0)]
        warmup: u64,
        /// Process ids of the Redis servers behind a cluster (several for Redis Cluster),
        /// whose CPU over the window is reported summed, and per event published.
        #[arg(long, value_delimiter = ',')]
        redis_pid: Vec<u32>,
        /// Publishing tasks (each one keep-alive connection per publishing address).
        #[arg(long, default_value_t = 4)]
        publishers: usize,
        /// Extra subscribers that never read (a stalled-client scenario).
        #[arg(long, default_value_t = 0)]
        stalled: usize,
        /// The kind of channel: public, private (signed by the harness) or presence (each
        /// subscriber a distinct user; mind the server's member limit per channel).
        #[arg(long, value_enum, default_value = "public")]
        kind: wsclient::Kind,
    },
    /// A big room: `fanout` with one public channel (every subscriber on it), so each
    /// event published over HTTP is a burst of N deliveries. Latency is per delivery from
    /// the publish time; loss is counted as in `fanout`.
    Room {
        #[arg(long, default_value_t = 5000)]
        subscribers: usize,
        /// Events per second on the one channel.
        #[arg(long, default_value_t = 20)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 100)]
        payload: usize,
        /// As in `fanout`.
        #[arg(long, value_enum, default_value = "padding")]
        payload_kind: payload::PayloadKind,
    },
    /// C presence channels of M members (distinct users); members leave (unsubscribe) and
    /// join again (subscribe) on their open connections, J joins+leaves per second in all.
    /// Latency: a join's `pusher:subscribe` sent to `pusher_internal:member_added` at one
    /// other member (the channel's observer, which never churns).
    PresenceChurn {
        #[arg(long, default_value_t = 100)]
        channels: usize,
        /// Members per channel, observer included (the server's member limit applies: a
        /// channel never holds more than this many at once).
        #[arg(long, default_value_t = 100)]
        members: usize,
        /// Joins plus leaves per second, all channels together.
        #[arg(long, default_value_t = 1000)]
        churn: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// HTTP publish throughput with C concurrent keep-alive clients.
    Trigger {
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Publish to this many channels in turn (to measure per-channel state such as
        /// history); 1 is the single channel `bench-trigger`.
        #[arg(long, default_value_t = 1)]
        channels: usize,
    },
    /// Open and hold N connections; report connect rate and server memory per connection.
    Connections {
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// Subscribe each connection to a channel.
        #[arg(long)]
        subscribe: bool,
    },
    /// Reconnect storm: N clients signed in and subscribed, closed by the server at once
    /// (terminate_connections for every user, or a node's drain), timed until every one is
    /// back, with events published throughout (see storm.rs).
    Storm(storm::Args),
    /// A mixed workload for a long time (fan-out from single and batch triggers, client
    /// events, presence churn, connection churn, webhooks to a local sink), with the
    /// server's memory, descriptors, CPU, loss and latency sampled every `--sample` seconds
    /// as one JSON line each.
    Soak(soak::Args),
    /// One harness process of a many-process run (bench/million.sh): opens and subscribes N
    /// connections, says so on stdout, then holds them and reports on `report` from stdin
    /// what arrived: each big-channel event's deliveries and first and last arrival, each
    /// small-channel delivery's latency (see hold.rs).
    Hold(hold::Args),
    /// Publishes events stamped with their Unix publish time for `hold` processes to time;
    /// optionally measures Redis's CPU per event (see publish.rs).
    Publish(publish::Args),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let dialer = match (&cli.ca, cli.tls) {
        (Some(ca), true) => match stream::Dialer::tls(ca, cli.addr.ip()) {
            Ok(dialer) => dialer,
            Err(error) => {
                eprintln!("herald-bench: {error}");
                return ExitCode::from(2);
            }
        },
        _ => stream::Dialer::Plain,
    };
    let app = http::App {
        addr: cli.addr,
        id: cli.app_id,
        key: cli.key,
        secret: cli.secret,
        dialer,
        deflate: match (cli.deflate, cli.deflate_optional) {
            (_, true) => negotiate::Deflate::Optional,
            (true, false) => negotiate::Deflate::Required,
            (false, false) => negotiate::Deflate::Off,
        },
        tally: Default::default(),
    };
    let result = match cli.mode {
        Mode::Fanout {
            subscribers,
            channels,
            rate,
            seconds,
            payload,
            payload_kind,
            subscribe_to,
            publish_to,
            warmup,
            redis_pid,
            publishers,
            stalled,
            kind,
        } => {
            modes::fanout(
                &app,
                &cli.pid,
                modes::Fanout {
                    progress: cli.progress,
                    kind,
                    subscribe_to,
                    publish_to,
                    warmup: Duration::from_secs(warmup),
                    redis_pids: redis_pid,
                    publishers,
                    stalled,
                    subscribers,
                    channels: channels.max(1),
                    rate,
                    duration: Duration::from_secs(seconds),
                    payload,
                    payload_kind,
                },
            )
            .await
        }
        Mode::Room {
            subscribers,
            rate,
            seconds,
            payload,
            payload_kind,
        } => modes::fanout(
            &app,
            &cli.pid,
            modes::Fanout {
                progress: cli.progress,
                kind: wsclient::Kind::Public,
                subscribe_to: Vec::new(),
                publish_to: Vec::new(),
                warmup: Duration::ZERO,
                redis_pids: Vec::new(),
                publishers: 4,
                stalled: 0,
                subscribers,
                channels: 1,
                rate,
                duration: Duration::from_secs(seconds),
                payload,
                payload_kind,
            },
        )
        .await
        .map(|mut report| {
            report["mode"] = "room".into();
            report
        }),
        Mode::PresenceChurn {
            channels,
            members,
            churn,
            seconds,
        } => {
            modes::presence_churn(
                &app,
                &cli.pid,
                modes::Churn {
                    progress: cli.progress,
                    channels: channels.max(1),
                    members: members.max(2),
                    churn,
                    duration: Duration::from_secs(seconds),
                },
            )
            .await
        }
        Mode::Trigger {
            concurrency,
            seconds,
            channels,
        } => {
            modes::trigger(
                &app,
                &cli.pid,
                modes::Trigger {
                    progress: cli.progress,
                    concurrency,
                    duration: Duration::from_secs(seconds),
                    channels,
                },
            )
            .await
        }
        Mode::Connections { count, subscribe } => {
            modes::connections(&app, &cli.pid, count, subscribe, cli.progress).await
        }
        Mode::Storm(args) => storm::storm(&app, &cli.pid, cli.progress, args).await,
        Mode::Soak(args) => soak::soak(&app, &cli.pid, cli.progress, args).await,
        Mode::Hold(args) => hold::hold(&app, args).await,
        Mode::Publish(args) => publish::publish(&app, args).await,
    };
    match result {
        Ok(mut report) => {
            report["tls"] = cli.tls.into();
            let handshakes = app.tally.handshakes.load(Ordering::Relaxed);
            let deflated = app.tally.deflated.load(Ordering::Relaxed);
            report["deflate"] = (deflated > 0 && deflated == handshakes).into();
            if deflated > 0 && deflated < handshakes {
                // Only with --deflate-optional: some connections negotiated, some did not.
                report["deflate_connections"] = deflated.into();
            }
            println!("{report}");
            let over = match (cli.tls, report["deflate"] == true) {
                (true, true) => "over TLS, deflate: ",
                (true, false) => "over TLS: ",
                (false, true) => "deflate: ",
                (false, false) => "",
            };
            eprintln!("{over}{}", summary::summary(&report));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("herald-bench: {error}");
            ExitCode::FAILURE
        }
    }
}
