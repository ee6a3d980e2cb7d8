//! The invariants, checked on what the workload recorded once a fault has healed: pure
//! functions of the report, so each rule can be read (and tested) on its own.
//!
//! A finding is a violation (the suite fails) or a measure (what was lost and why it was
//! allowed, for the table of docs/faults.md).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Report {
    pub publishers: Vec<Publisher>,
    pub subscribers: Vec<Subscriber>,
    pub observers: Vec<Observer>,
    pub members: Vec<MemberAt>,
    pub pairs: Vec<Pair>,
    pub hooks: Vec<Hook>,
}

#[derive(Debug, Deserialize)]
pub struct Publisher {
    pub node: String,
    pub p: u32,
    /// Per channel, the numbers answered 200, in order.
    pub ok: BTreeMap<String, Vec<u64>>,
    pub failed: u64,
}

#[derive(Debug, Deserialize)]
pub struct Gone {
    pub at: u64,
    pub back: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct Subscriber {
    pub id: String,
    pub node: String,
    pub drops: Vec<Gone>,
    /// Per channel, `(publisher, number)` in arrival order.
    pub got: BTreeMap<String, Vec<(u32, u64)>>,
}

#[derive(Debug, Deserialize)]
pub struct Entry {
    pub t: u64,
    pub kind: String,
    pub id: Option<String>,
    pub ids: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
pub struct Observer {
    pub id: String,
    pub node: String,
    pub drops: Vec<Gone>,
    pub log: Vec<Entry>,
    /// pusher-js's member list at the end.
    pub view: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct MemberAt {
    pub id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pair {
    pub channel: String,
    pub from: String,
    pub to: String,
    pub sent: Vec<u64>,
    pub got: Vec<u64>,
    pub sender_drops: Vec<Gone>,
    pub receiver_drops: Vec<Gone>,
}

#[derive(Debug, Deserialize, Clone)]
pub struct Hook {
    pub t: u64,
    pub name: String,
    pub channel: String,
    pub user_id: Option<String>,
}

/// What the scenario did, so a loss it explains is allowed (and counted) and any other is
/// a violation.
#[derive(Debug, Default, Clone)]
pub struct Excuses {
    /// Nodes cut off from Redis (or from everything) for a while: what crosses the bus to
    /// or from them may be lost, if a node counted it (a bus gap or a dropped message).
    pub impaired: BTreeSet<String>,
    /// Nodes that crashed (SIGKILL): what they held is gone, webhooks included.
    pub crashed: BTreeSet<String>,
    /// Webhooks may be lost: a receiver hung while a node shut down (the drain's), or Redis
    /// lost its data (the membership changes made while it was away). Their pairs are
    /// counted, not checked.
    pub webhooks_lost: bool,
    /// Nodes whose bus counted a gap (`herald_cluster_bus_gaps_total` > 0) or dropped
    /// messages (`herald_cluster_bus_dropped_total` > 0) during the run.
    pub detected: BTreeSet<String>,
}

#[derive(Debug, Default)]
pub struct Findings {
    pub violations: Vec<String>,
    /// Events answered 200 that a subscriber missed while its connection was down.
    pub lost_while_disconnected: u64,
    /// Events missed across a bus gap a node counted.
    pub lost_detected: u64,
    /// Events lost with a crashed node.
    pub lost_in_crash: u64,
    /// Client events that did not arrive (no ack exists for them).
    pub client_events_lost: u64,
    pub events_answered: u64,
    /// Triggers not answered 200 (refused, or no answer within 5 s).
    pub publish_failures: u64,
    /// The longest time a client's connection was down, milliseconds.
    pub longest_outage_ms: u64,
    pub deliveries: u64,
    pub webhooks: usize,
    /// Channels and members whose webhooks do not pair up, where an excuse allows it.
    pub webhooks_unpaired: usize,
}

impl Findings {
    fn violation(&mut self, text: String) {
        if self.violations.len() < 40 {
            self.violations.push(text);
        }
    }
}

fn was_down(drops: &[Gone]) -> bool {
    !drops.is_empty()
}

/// Why a message sent through node `from` to a receiver on node `to` may be missing, if
/// it may: `Some(kind)`, or `None` for a violation.
fn excuse(excuses: &Excuses, from: &str, to: &str, receiver_was_down: bool) -> Option<Loss> {
    if receiver_was_down {
        return Some(Loss::Disconnected);
    }
    if excuses.crashed.contains(from) {
        return Some(Loss::Crash);
    }
    let impaired = from != to && (excuses.impaired.contains(from) || excuses.impaired.contains(to));
    let detected = excuses.detected.contains(to) || excuses.detected.contains(from);
    (impaired && detected).then_some(Loss::Detected)
}

enum Loss {
    Disconnected,
    Crash,
    Detected,
}

/// Every rule over the report; `users` is what each node's HTTP API answered for the
/// presence channel's users once the cluster converged.
pub fn check(
    report: &Report,
    excuses: &Excuses,
    users: &BTreeMap<String, Vec<String>>,
) -> Findings {
    let mut f = Findings::default();
    events(report, excuses, &mut f);
    client_events(report, excuses, &mut f);
    presence(report, users, &mut f);
    webhooks(&report.hooks, excuses, &mut f);
    f
}

/// No duplicate and no reordering per publisher and channel, ever; every event answered 200
/// reaches every subscriber that stayed connected, unless an excuse covers it.
fn events(report: &Report, excuses: &Excuses, f: &mut Findings) {
    let by_p: BTreeMap<u32, &Publisher> = report.publishers.iter().map(|p| (p.p, p)).collect();
    f.publish_failures = report.publishers.iter().map(|p| p.failed).sum();
    let drops = report
        .subscribers
        .iter()
        .flat_map(|s| &s.drops)
        .chain(report.observers.iter().flat_map(|o| &o.drops));
    f.longest_outage_ms = drops
        .map(|d| d.back.unwrap_or(u64::MAX).saturating_sub(d.at))
        .max()
        .unwrap_or(0);
    f.events_answered = report
        .publishers
        .iter()
        .flat_map(|p| p.ok.values())
        .map(|v| v.len() as u64)
        .sum();
    for sub in &report.subscribers {
        for (channel, got) in &sub.got {
            f.deliveries += got.len() as u64;
            let mut last: BTreeMap<u32, u64> = BTreeMap::new();
            let mut seen: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
            for &(p, s) in got {
                if !seen.entry(p).or_default().insert(s) {
                    f.violation(format!(
                        "{}: {channel}: event {p}/{s} delivered twice",
                        sub.id
                    ));
                } else if last.get(&p).is_some_and(|&l| s < l) {
                    f.violation(format!(
                        "{}: {channel}: event {p}/{s} after {p}/{}",
                        sub.id, last[&p]
                    ));
                }
                last.insert(p, s);
            }
            for (p, publisher) in &by_p {
                let Some(answered) = publisher.ok.get(channel) else {
                    continue;
                };
                let have = seen.remove(p).unwrap_or_default();
                let missing: Vec<u64> = answered
                    .iter()
                    .copied()
                    .filter(|s| !have.contains(s))
                    .collect();
                if missing.is_empty() {
                    continue;
                }
                match excuse(excuses, &publisher.node, &sub.node, was_down(&sub.drops)) {
                    Some(Loss::Disconnected) => f.lost_while_disconnected += missing.len() as u64,
                    Some(Loss::Crash) => f.lost_in_crash += missing.len() as u64,
                    Some(Loss::Detected) => f.lost_detected += missing.len() as u64,
                    None => f.violation(format!(
                        "{} (on {}): {channel}: {} events of publisher {p} (via {}) answered 200 \
                         and never delivered, e.g. {:?}",
                        sub.id,
                        sub.node,
                        missing.len(),
                        publisher.node,
                        &missing[..missing.len().min(5)]
                    )),
                }
            }
        }
    }
}

/// Client events: never twice, never out of order; a loss only with an excuse.
fn client_events(report: &Report, excuses: &Excuses, f: &mut Findings) {
    for pair in &report.pairs {
        let mut last = 0;
        let mut seen = BTreeSet::new();
        for &s in &pair.got {
            if !seen.insert(s) {
                f.violation(format!(
                    "{}: client event {s} delivered twice",
                    pair.channel
                ));
            } else if s < last {
                f.violation(format!("{}: client event {s} after {last}", pair.channel));
            }
            last = last.max(s);
        }
        let missing = pair.sent.iter().filter(|s| !seen.contains(s)).count() as u64;
        if missing == 0 {
            continue;
        }
        let down = was_down(&pair.sender_drops) || was_down(&pair.receiver_drops);
        match excuse(excuses, &pair.from, &pair.to, down) {
            Some(_) => f.client_events_lost += missing,
            None => f.violation(format!(
                "{}: {missing} client events sent on a healthy connection never arrived",
                pair.channel
            )),
        }
    }
}

/// Presence: every node's member list is the connected members; each observer's frames
/// keep the list consistent (no member added twice, none removed that was not there) and
/// end at the same list.
fn presence(report: &Report, users: &BTreeMap<String, Vec<String>>, f: &mut Findings) {
    let truth: BTreeSet<&str> = report.members.iter().map(|m| m.id.as_str()).collect();
    for (node, ids) in users {
        let listed: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        if listed != truth {
            f.violation(format!(
                "node {node} lists presence members {:?}; connected: {:?}",
                listed.difference(&truth).collect::<Vec<_>>(),
                truth.difference(&listed).collect::<Vec<_>>()
            ));
        }
    }
    for obs in &report.observers {
        let mut list: BTreeSet<String> = BTreeSet::new();
        for entry in &obs.log {
            match (entry.kind.as_str(), &entry.id, &entry.ids) {
                ("init", _, Some(ids)) => {
                    list = ids.iter().cloned().collect();
                    if std::env::var_os("HERALD_FAULTS_VERBOSE").is_some() {
                        eprintln!("{} init at {} ms: {ids:?}", obs.id, entry.t);
                    }
                }
                ("add", Some(id), _) => {
                    if !list.insert(id.clone()) {
                        f.violation(format!(
                            "{}: member_added for {id} at {} ms, already a member",
                            obs.id, entry.t
                        ));
                    }
                }
                ("remove", Some(id), _) => {
                    if !list.remove(id) {
                        f.violation(format!(
                            "{}: member_removed for {id} at {} ms, not a member",
                            obs.id, entry.t
                        ));
                    }
                }
                _ => f.violation(format!("{}: unreadable log entry {entry:?}", obs.id)),
            }
        }
        let end: BTreeSet<&str> = list.iter().map(String::as_str).collect();
        if end != truth {
            f.violation(format!(
                "{} (on {}): its frames end at {:?} extra, {:?} missing",
                obs.id,
                obs.node,
                end.difference(&truth).collect::<Vec<_>>(),
                truth.difference(&end).collect::<Vec<_>>()
            ));
        }
        let view: BTreeSet<&str> = obs.view.iter().map(String::as_str).collect();
        if view != truth {
            f.violation(format!(
                "{}: pusher-js's member list differs from the connected members",
                obs.id
            ));
        }
    }
}

/// Whether every channel's last webhook is `channel_vacated` and every member's last is
/// `member_removed`: what the webhooks come to once every client has gone.
pub fn all_closed(hooks: &[Hook]) -> bool {
    let mut last: BTreeMap<(&str, Option<&str>), &str> = BTreeMap::new();
    for hook in hooks {
        match hook.name.as_str() {
            "channel_occupied" | "channel_vacated" => {
                last.insert((&hook.channel, None), &hook.name);
            }
            "member_added" | "member_removed" => {
                last.insert((&hook.channel, hook.user_id.as_deref()), &hook.name);
            }
            _ => {}
        }
    }
    last.values()
        .all(|name| *name == "channel_vacated" || *name == "member_removed")
}

/// Webhooks, once every client has gone: each channel's occupied and vacated alternate and
/// end vacated; each member's added and removed alternate and end removed. A crashed node
/// may have taken some with it.
pub fn webhooks(hooks: &[Hook], excuses: &Excuses, f: &mut Findings) {
    f.webhooks = hooks.len();
    let mut channels: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut members: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
    for hook in hooks {
        // Each name with the time the sink got it, as `channel_vacated@1234`.
        let named = format!("{}@{}", hook.name, hook.t);
        match (hook.name.as_str(), &hook.user_id) {
            ("channel_occupied" | "channel_vacated", _) => {
                channels.entry(&hook.channel).or_default().push(named)
            }
            ("member_added" | "member_removed", Some(user)) => members
                .entry((&hook.channel, user))
                .or_default()
                .push(named),
            _ => {}
        }
    }
    let lossy = !excuses.crashed.is_empty() || excuses.webhooks_lost;
    let mut unpaired = 0;
    let mut violations = Vec::new();
    let mut pairs = |key: String, names: &[String], open: &str, close: &str| {
        let mut inside = false;
        let mut fault = None;
        for named in names {
            let name = named.split('@').next().unwrap_or_default();
            let ok = if name == open { !inside } else { inside };
            if !ok && fault.is_none() {
                fault = Some(format!(
                    "webhooks of {key}: {names:?} do not alternate {open}/{close}"
                ));
            }
            inside = name == open;
        }
        if inside && fault.is_none() {
            fault = Some(format!(
                "webhooks of {key}: {open} never followed by {close}"
            ));
        }
        if let Some(fault) = fault {
            unpaired += 1;
            if !lossy {
                violations.push(fault);
            }
        }
    };
    for (channel, names) in &channels {
        pairs(
            channel.to_string(),
            names,
            "channel_occupied",
            "channel_vacated",
        );
    }
    for ((channel, user), names) in &members {
        pairs(
            format!("{channel}/{user}"),
            names,
            "member_added",
            "member_removed",
        );
    }
}
