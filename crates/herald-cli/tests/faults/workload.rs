//! Drives `tests/js/faults/workload.mjs`: the official clients' workload, one Node process
//! per scenario in this namespace, reaching the nodes through the lab's bridge.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::node::{Node, APP_ID, KEY, PORT, SECRET};

/// How busy the workload is.
#[derive(Clone, Debug)]
pub struct Load {
    pub channels: u32,
    pub subscribers_per_node: u32,
    pub members_per_node: u32,
    pub publish_every: Duration,
    pub churn_every: Duration,
    pub client_event_every: Duration,
}

impl Default for Load {
    fn default() -> Load {
        Load {
            channels: 3,
            subscribers_per_node: 2,
            members_per_node: 2,
            publish_every: Duration::from_millis(50),
            churn_every: Duration::from_millis(1500),
            // Half the default limit of client events (10 per second per connection):
            // TCP bunches them up after a lost packet, and a burst over the limit is
            // refused with 4301, as it should be.
            client_event_every: Duration::from_millis(200),
        }
    }
}

pub struct Workload {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    next_id: u64,
    /// The webhook sink's port on the lab's gateway.
    pub sink_port: u16,
}

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/js")
}

impl Workload {
    /// Starts the workload's process and its webhook sink on `gateway`.
    pub async fn spawn(gateway: Ipv4Addr, load: &Load) -> Workload {
        let dir = js_dir();
        assert!(
            dir.join("node_modules/pusher-js").is_dir(),
            "the official clients are not installed: run `npm ci --prefix tests/js` first"
        );
        let config = json!({
            "appId": APP_ID, "key": KEY, "secret": SECRET,
            "sinkHost": gateway.to_string(),
            "channels": load.channels,
            "subscribersPerNode": load.subscribers_per_node,
            "membersPerNode": load.members_per_node,
            "publishEveryMs": load.publish_every.as_millis() as u64,
            "churnEveryMs": load.churn_every.as_millis() as u64,
            "clientEventEveryMs": load.client_event_every.as_millis() as u64,
        });
        let mut child = Command::new("node")
            .arg(dir.join("faults/workload.mjs"))
            .env("FAULTS_WORKLOAD", config.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start node (Node.js is needed for the fault suite)");
        let stdin = child.stdin.take().expect("stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the workload starts within 20 s")
            .expect("read the workload")
            .expect("the workload's first line");
        let first: Value = serde_json::from_str(&first).expect("JSON from the workload");
        let sink_port = first["sink"].as_u64().expect("the sink's port") as u16;
        Workload {
            child,
            stdin,
            lines,
            next_id: 0,
            sink_port,
        }
    }

    /// The webhook URL the nodes post to.
    pub fn sink_url(&self, gateway: Ipv4Addr) -> String {
        format!("http://{gateway}:{}/hook", self.sink_port)
    }

    /// Sends a command and waits for its answer (at most `limit`).
    pub async fn command(&mut self, cmd: &str, args: Value, limit: Duration) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = args;
        message["cmd"] = cmd.into();
        message["id"] = id.into();
        self.stdin
            .write_all(format!("{message}\n").as_bytes())
            .await
            .expect("write to the workload");
        let answer = tokio::time::timeout(limit, async {
            loop {
                let line = self
                    .lines
                    .next_line()
                    .await
                    .expect("read the workload")
                    .expect("the workload exited");
                let value: Value = serde_json::from_str(&line).expect("JSON from the workload");
                if value["id"] == id {
                    return value;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the workload did not answer `{cmd}` within {limit:?}"));
        assert!(
            answer["ok"] == true,
            "workload `{cmd}` failed: {}",
            answer["error"]
        );
        answer
    }

    /// Connects every client to `nodes` and starts publishing, churning and sending.
    pub async fn start(&mut self, nodes: &[&Node]) {
        let list: Vec<Value> = nodes
            .iter()
            .map(|n| json!({"name": n.name, "host": n.host.ip.to_string(), "port": PORT}))
            .collect();
        self.command("start", json!({"nodes": list}), Duration::from_secs(30))
            .await;
    }

    pub async fn quiesce(&mut self) {
        self.command("quiesce", json!({}), Duration::from_secs(60))
            .await;
    }

    /// The presence members whose connection is up now, and each connected observer's
    /// member list as pusher-js holds it, sorted.
    pub async fn members(&mut self) -> (Vec<String>, Vec<Vec<String>>) {
        let answer = self
            .command("members", json!({}), Duration::from_secs(10))
            .await;
        let mut ids: Vec<String> = answer["members"]
            .as_array()
            .expect("members")
            .iter()
            .filter_map(|m| m["id"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        let views = serde_json::from_value(answer["views"].clone()).expect("views");
        (ids, views)
    }

    pub async fn report(&mut self) -> Value {
        self.command("report", json!({}), Duration::from_secs(30))
            .await
    }

    /// Makes the webhook sink answer normally (`ok`), hang (`hang`) or fail (`fail`).
    pub async fn sink(&mut self, mode: &str) {
        self.command("sink", json!({"mode": mode}), Duration::from_secs(5))
            .await;
    }

    /// Disconnects every client.
    pub async fn close(&mut self) {
        self.command("close", json!({}), Duration::from_secs(10))
            .await;
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
