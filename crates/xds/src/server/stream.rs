//! The state of one delta xDS stream, without any I/O: what the client subscribed to,
//! what we believe it has, which responses await an ACK. The stream task feeds it requests
//! and snapshots and sends what it returns, which keeps every protocol rule unit-testable.
//!
//! Semantics follow Envoy's incremental xDS protocol
//! (<https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol#incremental-xds>):
//! a first request for a type with no names is a wildcard subscription, `*` subscribes or
//! unsubscribes the wildcard explicitly, `initial_resource_versions` tells what a
//! reconnecting client already has, and a request carrying a `response_nonce` ACKs that
//! response, or NACKs it when `error_detail` is set.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use prost::Message as _;
use tonic::Status;

use super::held::Held;
use super::status::{Nack, ProxyStatus, TypeStatus};
use crate::resource::{Layers, ProxyResources, ResourceMap, compact_version};

/// Responses sent and not yet ACKed or NACKed, per type. A client that never answers
/// cannot grow this: past the bound the oldest is forgotten, and a late answer to it is
/// treated as stale (ignored), as any answer to an unknown nonce is.
const MAX_PENDING: usize = 256;

/// The size responses are cut at by default: under tonic's initial encode buffer (8 KiB,
/// which holds the 5-byte gRPC header too), so a stream's buffer never grows. tonic keeps
/// that buffer for the stream's life at the largest size it reached; at 16 KiB responses it
/// doubled to 32-64 KiB, which at 2000 proxies was about half the control plane's memory.
pub(crate) const DEFAULT_MAX_RESPONSE_BYTES: usize = 7 * 1024;

/// The longest NACK reason kept for status; a proxy's error text is input, and status is
/// shown to people.
const MAX_REASON_LEN: usize = 4096;

/// What one request did, for the stream task to act on.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Outcome {
    /// The subscription changed (or is new): compute and send a response for this type.
    pub resend: bool,
    /// The request ACKed a response that carried this type version.
    pub acked: Option<String>,
    /// The request NACKed a response.
    pub nacked: Option<Nack>,
}

/// What one type's client lacks, before it is cut into responses.
struct Diff {
    version: String,
    /// Each update's encoded size (about), and its booking (which names it).
    updates: Vec<(usize, Touched)>,
    removed: Vec<(String, Option<Touched>)>,
    /// A response is owed even if it is empty.
    owe_response: bool,
}

/// Updates gathered for one response.
#[derive(Default)]
struct Chunk {
    touched: Vec<Touched>,
    bytes: usize,
}

/// A response as planned: everything but its resources, which are copied from the snapshot
/// it was planned against only when it is sent ([`Outgoing::fill`]). A push of thousands of
/// resources then holds one response's copy at a time, not the whole push's.
#[derive(Debug)]
pub struct Outgoing {
    response: DeltaDiscoveryResponse,
    names: Vec<Arc<str>>,
}

impl Outgoing {
    /// The response, with the resources of `snapshot` (the one it was planned against).
    pub fn fill(self, snapshot: &ProxyResources) -> DeltaDiscoveryResponse {
        let Outgoing {
            mut response,
            names,
        } = self;
        response.resources = names
            .iter()
            .filter_map(|name| {
                let r = snapshot.get(&response.type_url, name)?;
                Some(Resource {
                    name: name.to_string(),
                    version: r.version.clone(),
                    resource: Some(r.resource.clone()),
                    ..Default::default()
                })
            })
            .collect();
        response
    }

    pub fn type_url(&self) -> &str {
        &self.response.type_url
    }

    pub fn nonce(&self) -> &str {
        &self.response.nonce
    }

    /// Resources it will carry, and names it removes.
    pub fn counts(&self) -> (usize, usize) {
        (self.names.len(), self.response.removed_resources.len())
    }
}

struct Pending {
    nonce: String,
    type_version: String,
    /// Every name the response touched, to undo on NACK.
    touched: Vec<Touched>,
}

struct Touched {
    name: Arc<str>,
    /// What `client_has` held before: the client keeps it when it rejects the response.
    before: Option<u64>,
    /// The version sent, or `None` for a removal.
    sent: Option<u64>,
}

#[derive(Default)]
struct TypeState {
    wildcard: bool,
    names: BTreeSet<String>,
    /// name -> version the client has, as far as this stream knows. Versions are held
    /// compact ([`compact_version`]) and names share the snapshot's: a server with
    /// thousands of streams keeps thousands of these.
    client_has: Held,
    pending: VecDeque<Pending>,
    /// A response is owed even if nothing changed (a new subscription must be answered,
    /// or the client would wait for it forever).
    owe_response: bool,
    /// Names subscribed explicitly that do not exist: reported once in
    /// `removed_resources`, so the client does not wait for them.
    absent: BTreeSet<String>,
    /// name -> version (`None`: the removal) the client NACKed. Not sent again until the
    /// resource changes, so a bad resource is not pushed in a loop; while any remains the
    /// type is not in sync, whatever else the client ACKs.
    rejected: HashMap<Arc<str>, Option<u64>>,
    /// The sets of the snapshot last diffed (`Some(None)`: it had none of this type).
    diffed: Option<Option<Layers>>,
    /// A request changed what the client has or wants since the last diff.
    dirty: bool,
}

impl TypeState {
    /// Whether `snapshot` holds exactly the sets this type was last diffed against, and
    /// nothing since changed what the client has or wants: then there is nothing to send,
    /// found without walking thousands of shared resources.
    fn unchanged(&self, snapshot: &ProxyResources, type_url: &str) -> bool {
        !self.dirty
            && !self.owe_response
            && match (&self.diffed, snapshot.layers(type_url)) {
                (Some(Some(a)), Some(b)) => a.same_sets(b),
                (Some(None), None) => true,
                _ => false,
            }
    }

    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

pub(crate) struct StreamState {
    stream_id: u64,
    nonces: u64,
    /// Type URLs this server serves, in the order responses are sent.
    served: std::sync::Arc<[String]>,
    max_response_bytes: usize,
    types: HashMap<String, TypeState>,
    pub status: ProxyStatus,
}

impl StreamState {
    pub fn new(stream_id: u64, node_id: String, served: std::sync::Arc<[String]>) -> Self {
        Self {
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            stream_id,
            nonces: 0,
            served,
            types: HashMap::new(),
            status: ProxyStatus {
                node_id,
                stream_id,
                connected_since: SystemTime::now(),
                types: BTreeMap::new(),
            },
        }
    }

    /// Applies one request: ACK or NACK of an earlier response, subscription changes and,
    /// on the first request of a type, what the client already has.
    pub fn on_request(&mut self, req: &DeltaDiscoveryRequest) -> Result<Outcome, Status> {
        let type_url = req.type_url.as_str();
        if !self.served.iter().any(|t| t == type_url) {
            return Err(Status::invalid_argument(format!(
                "unknown type URL {type_url:?}: this server serves {}",
                self.served.join(", ")
            )));
        }
        let first = !self.types.contains_key(type_url);
        let ts = self.types.entry(type_url.to_owned()).or_default();
        let status = self.status.types.entry(type_url.to_owned()).or_default();
        let mut outcome = Outcome::default();
        // Anything but a plain ACK may change what the client has or wants.
        let plain_ack = !first
            && req.error_detail.is_none()
            && req.resource_names_subscribe.is_empty()
            && req.resource_names_unsubscribe.is_empty();
        if !plain_ack {
            ts.dirty = true;
        }

        if !req.response_nonce.is_empty() {
            if let Some(at) = ts
                .pending
                .iter()
                .position(|p| p.nonce == req.response_nonce)
            {
                // Answers come in order; anything older than the answered response will
                // never be answered now.
                let answered = ts.pending.drain(..=at).next_back();
                if let Some(p) = answered {
                    match &req.error_detail {
                        Some(detail) => {
                            for t in p.touched {
                                match t.before {
                                    Some(v) => ts.client_has.insert(t.name.clone(), v),
                                    None => ts.client_has.remove(&t.name),
                                };
                                ts.rejected.insert(t.name, t.sent);
                            }
                            let nack = Nack {
                                version: p.type_version,
                                nonce: p.nonce,
                                reason: bounded_reason(&detail.message),
                                at: SystemTime::now(),
                            };
                            status.last_nack = Some(nack.clone());
                            outcome.nacked = Some(nack);
                        }
                        // An ACK that leaves NACKed resources behind is partial: the client
                        // does not hold this type version, so the last full ACK stands.
                        // Only the last answer of a push: a push cut into several
                        // responses is held whole once every one is ACKed.
                        None if ts.rejected.is_empty() && ts.pending.is_empty() => {
                            status.acked_version = Some(p.type_version.clone());
                            status.last_nack = None;
                            outcome.acked = Some(p.type_version);
                        }
                        None => {}
                    }
                }
            } else {
                tracing::debug!(
                    stream = self.stream_id,
                    type_url,
                    nonce = req.response_nonce,
                    "answer to an unknown or superseded nonce, ignored"
                );
            }
        }

        if first {
            for (name, version) in &req.initial_resource_versions {
                ts.client_has
                    .insert(Arc::from(name.as_str()), compact_version(version));
            }
            ts.owe_response = true;
            outcome.resend = true;
            if req.resource_names_subscribe.is_empty() {
                ts.wildcard = true;
            }
        }
        for name in &req.resource_names_subscribe {
            if name == "*" {
                outcome.resend |= !ts.wildcard;
                ts.wildcard = true;
            } else if ts.names.insert(name.clone()) {
                ts.absent.insert(name.clone());
                outcome.resend = true;
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                ts.wildcard = false;
            } else {
                ts.names.remove(name);
                ts.absent.remove(name);
            }
        }
        if !req.resource_names_unsubscribe.is_empty() {
            // The client forgets what it unsubscribed from; no removal is sent for it.
            let TypeState {
                client_has,
                wildcard,
                names,
                ..
            } = ts;
            for n in client_has.names() {
                if !*wildcard && !names.contains(&*n) {
                    client_has.remove(&n);
                }
            }
        }
        Ok(outcome)
    }

    /// [`Self::plan`], filled.
    #[cfg(test)]
    pub fn responses(
        &mut self,
        snapshot: &ProxyResources,
        only: Option<&str>,
    ) -> Vec<DeltaDiscoveryResponse> {
        self.plan(snapshot, only)
            .into_iter()
            .map(|o| o.fill(snapshot))
            .collect()
    }

    /// The responses that bring the client from what it has to `snapshot`, for every
    /// subscribed type (`only` = None) or one type, booked as sent; each one's resources are
    /// copied from `snapshot` by [`Outgoing::fill`] when it is sent.
    ///
    /// Additions and changes come first, in the served order (what a resource refers to
    /// before what refers to it); removals come last, in the reverse order (a listener goes
    /// before the route configuration it used), so the client never holds a dangling name.
    /// No response is much larger than `max_response_bytes` (one resource larger than that
    /// travels alone): a server's memory per stream follows the largest message it sent.
    pub fn plan(&mut self, snapshot: &ProxyResources, only: Option<&str>) -> Vec<Outgoing> {
        let served = self.served.clone();
        let mut out = Vec::new();
        let mut removals = Vec::new();
        for type_url in served.iter() {
            if only.is_some_and(|o| o != type_url) {
                continue;
            }
            let Some(diff) = self.diff(snapshot, type_url) else {
                continue;
            };
            let Diff {
                version,
                updates,
                removed,
                owe_response,
            } = diff;
            let mut chunk = Chunk::default();
            for (size, touched) in updates {
                if !chunk.touched.is_empty() && chunk.bytes + size > self.max_response_bytes {
                    let full = std::mem::take(&mut chunk);
                    out.push(self.respond(type_url, &version, true, Vec::new(), full.touched));
                }
                chunk.bytes += size;
                chunk.touched.push(touched);
            }
            if !chunk.touched.is_empty() || (removed.is_empty() && owe_response) {
                out.push(self.respond(type_url, &version, true, Vec::new(), chunk.touched));
            }
            if !removed.is_empty() {
                removals.push((type_url.clone(), version, removed));
            }
        }
        for (type_url, version, removed) in removals.into_iter().rev() {
            let (names, touched): (Vec<String>, Vec<Option<Touched>>) = removed.into_iter().unzip();
            let touched = touched.into_iter().flatten().collect();
            out.push(self.respond(&type_url, &version, false, names, touched));
        }
        out
    }

    /// What the client of `type_url` lacks against `snapshot`, booked as sent (`client_has`
    /// updated); None when it lacks nothing and no response is owed.
    fn diff(&mut self, snapshot: &ProxyResources, type_url: &str) -> Option<Diff> {
        let ts = self.types.get_mut(type_url)?;
        if ts.unchanged(snapshot, type_url) {
            return None;
        }
        ts.diffed = Some(snapshot.layers(type_url).cloned());
        ts.dirty = false;
        let type_version = snapshot.type_version(type_url);
        let status = self.status.types.entry(type_url.to_owned()).or_default();
        status.latest_version = Some(type_version.clone());

        // A rejection stands only while the snapshot still holds what was rejected.
        ts.rejected.retain(|name, v| {
            snapshot
                .get(type_url, name)
                .map(|r| compact_version(&r.version))
                == *v
        });
        // A wildcard client with nothing rejected is rebased onto the snapshot below: then
        // booking each name here would only grow a map (thousands of names on a first push)
        // to be dropped at once.
        let rebase = ts.wildcard && ts.rejected.is_empty();
        let mut updates = Vec::new();
        for (name, r) in snapshot.iter(type_url) {
            if !ts.wants(name) {
                continue;
            }
            let version = compact_version(&r.version);
            if ts.client_has.get(name) == Some(version)
                || ts.rejected.get(&**name) == Some(&Some(version))
            {
                continue;
            }
            let before = if rebase {
                ts.client_has.get(name)
            } else {
                ts.client_has.insert(name.clone(), version)
            };
            // The size of the `Resource` it becomes, near enough to cut responses by.
            let size = name.len() + r.version.len() + r.resource.encoded_len() + 16;
            let touched = Touched {
                name: name.clone(),
                before,
                sent: Some(version),
            };
            updates.push((size, touched));
        }
        // A base that is one of the snapshot's own sets holds only names the snapshot has:
        // with a wildcard subscription, none of them can be gone.
        let in_snapshot: &[Arc<ResourceMap>] = match snapshot.layers(type_url) {
            Some(l) if ts.wildcard => l.shared(),
            _ => &[],
        };
        let gone: Vec<Arc<str>> = ts
            .client_has
            .names_except(in_snapshot)
            .into_iter()
            .filter(|n| snapshot.get(type_url, n).is_none() || !ts.wants(n))
            .filter(|n| ts.rejected.get(&**n).is_none_or(Option::is_some))
            .collect();
        let mut removed: Vec<(String, Option<Touched>)> = Vec::new();
        for name in gone {
            let before = ts.client_has.remove(&name);
            let touched = Touched {
                name: name.clone(),
                before,
                sent: None,
            };
            removed.push((name.to_string(), Some(touched)));
        }
        for name in std::mem::take(&mut ts.absent) {
            if snapshot.get(type_url, &name).is_none() && !removed.iter().any(|(n, _)| *n == name) {
                // Never held: nothing to undo, nothing to reject.
                removed.push((name, None));
            }
        }
        if rebase {
            // Booked as sent, the client now holds exactly the snapshot's resources of
            // this type: keep that as the snapshot's sets, not name by name.
            ts.client_has.rebase(snapshot.layers(type_url));
        }
        if updates.is_empty() && removed.is_empty() && !ts.owe_response {
            if ts.pending.is_empty() && ts.rejected.is_empty() {
                // Everything answered, nothing rejected, nothing to send: the client
                // holds this version (a change that was undone, a rejected resource that
                // was deleted).
                status.acked_version = Some(type_version);
                status.last_nack = None;
            }
            return None;
        }
        let owe_response = std::mem::take(&mut ts.owe_response);
        removed.sort_by(|a, b| a.0.cmp(&b.0));
        Some(Diff {
            version: type_version,
            updates,
            removed,
            owe_response,
        })
    }

    /// One response, with its nonce and its pending entry; `updates`: it carries the
    /// resources `touched` names (else it removes `removed`).
    fn respond(
        &mut self,
        type_url: &str,
        type_version: &str,
        updates: bool,
        removed: Vec<String>,
        touched: Vec<Touched>,
    ) -> Outgoing {
        let names = if updates {
            touched.iter().map(|t| t.name.clone()).collect()
        } else {
            Vec::new()
        };
        self.nonces += 1;
        let nonce = format!("{}-{}", self.stream_id, self.nonces);
        let ts = self.types.entry(type_url.to_owned()).or_default();
        if ts.pending.len() == MAX_PENDING {
            ts.pending.pop_front();
        }
        ts.pending.push_back(Pending {
            nonce: nonce.clone(),
            type_version: type_version.to_owned(),
            touched,
        });
        let status = self.status.types.entry(type_url.to_owned()).or_default();
        status.sent_version = Some(type_version.to_owned());
        status.sent_nonce = Some(nonce.clone());
        Outgoing {
            response: DeltaDiscoveryResponse {
                system_version_info: type_version.to_owned(),
                type_url: type_url.to_owned(),
                removed_resources: removed,
                nonce,
                ..Default::default()
            },
            names,
        }
    }

    /// Cuts responses at about `bytes` (at least one resource each).
    pub fn with_max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes.max(1);
        self
    }

    /// Whether a response sent is still unanswered (neither ACKed nor NACKed).
    pub fn awaiting_answers(&self) -> bool {
        self.types.values().any(|t| !t.pending.is_empty())
    }

    /// Status of this stream's proxy as `proxy-status` shows it.
    pub fn status(&self) -> &ProxyStatus {
        &self.status
    }

    #[cfg(test)]
    fn client_has(&self, type_url: &str) -> BTreeMap<String, String> {
        self.types
            .get(type_url)
            .map(|t| {
                t.client_has
                    .names()
                    .into_iter()
                    .filter_map(|k| {
                        let v = t.client_has.get(&k)?;
                        Some((k.to_string(), format!("{v:016x}")))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl TypeStatus {
    /// Sent, and the client has ACKed the latest version with no NACK since.
    pub fn in_sync(&self) -> bool {
        self.last_nack.is_none()
            && self.latest_version.is_some()
            && self.acked_version == self.latest_version
    }
}

fn bounded_reason(reason: &str) -> String {
    if reason.len() <= MAX_REASON_LEN {
        return reason.to_owned();
    }
    let mut end = MAX_REASON_LEN;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &reason[..end])
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use envoy_types::pb::google::rpc::Status as RpcStatus;

    use super::*;
    use crate::proto;
    use crate::resource::{CLUSTER_TYPE_URL, LISTENER_TYPE_URL, WEFT_TYPE_URLS};

    fn state() -> StreamState {
        let served: Arc<[String]> = WEFT_TYPE_URLS.iter().map(|s| s.to_string()).collect();
        StreamState::new(
            7,
            "sidecar~127.0.0.2~a.default~default.svc.cluster.local".into(),
            served,
        )
    }

    fn cluster(name: &str, policy: proto::LbPolicy) -> proto::Cluster {
        proto::Cluster {
            name: name.into(),
            lb_policy: policy as i32,
            ..Default::default()
        }
    }

    fn snapshot(clusters: &[proto::Cluster]) -> ProxyResources {
        let mut s = ProxyResources::new();
        for c in clusters {
            s.insert(c);
        }
        s
    }

    fn subscribe(type_url: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: type_url.into(),
            ..Default::default()
        }
    }

    fn ack(type_url: &str, nonce: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: type_url.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    fn nack(type_url: &str, nonce: &str, reason: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            error_detail: Some(RpcStatus {
                code: 3,
                message: reason.into(),
                details: vec![],
            }),
            ..ack(type_url, nonce)
        }
    }

    fn names(r: &DeltaDiscoveryResponse) -> Vec<&str> {
        r.resources.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn wildcard_subscription_gets_everything_then_only_changes() {
        let mut s = state();
        let snap = snapshot(&[
            cluster("a", proto::LbPolicy::RoundRobin),
            cluster("b", proto::LbPolicy::RoundRobin),
        ]);
        let o = s.on_request(&subscribe(CLUSTER_TYPE_URL)).unwrap();
        assert!(o.resend);
        let r = s.responses(&snap, Some(CLUSTER_TYPE_URL));
        assert_eq!(r.len(), 1);
        assert_eq!(names(&r[0]), ["a", "b"]);
        assert_eq!(
            r[0].system_version_info,
            snap.type_version(CLUSTER_TYPE_URL)
        );

        // Nothing changed: nothing to send.
        assert!(s.responses(&snap, None).is_empty());

        // b changes, c appears, a is removed.
        let snap2 = snapshot(&[
            cluster("b", proto::LbPolicy::Random),
            cluster("c", proto::LbPolicy::RoundRobin),
        ]);
        let r = s.responses(&snap2, None);
        assert_eq!(r.len(), 2, "updates, then removals");
        assert_eq!(names(&r[0]), ["b", "c"]);
        assert!(r[0].removed_resources.is_empty());
        assert!(r[1].resources.is_empty());
        assert_eq!(r[1].removed_resources, ["a"]);
    }

    #[test]
    fn removals_follow_updates_in_reverse_order_and_big_pushes_are_cut() {
        let mut s = state().with_max_response_bytes(100);
        for t in WEFT_TYPE_URLS {
            s.on_request(&subscribe(t)).unwrap();
        }
        let listener = |name: &str| proto::Listener {
            name: name.into(),
            ..Default::default()
        };
        let mut snap = snapshot(&[cluster("old", proto::LbPolicy::RoundRobin)]);
        snap.insert(&listener("old"));
        let first = s.responses(&snap, None);
        // The owed (empty) secrets, clusters, the owed route configurations, listeners.
        assert_eq!(first.len(), 4);
        for r in &first {
            s.on_request(&ack(&r.type_url, &r.nonce)).unwrap();
        }
        assert!(!s.awaiting_answers());

        // Twenty new clusters and a new listener; the old listener and cluster go.
        let clusters: Vec<proto::Cluster> = (0..20)
            .map(|i| cluster(&format!("cluster-{i:02}"), proto::LbPolicy::Random))
            .collect();
        let mut next = snapshot(&clusters);
        next.insert(&listener("new"));
        let r = s.responses(&next, None);
        let kinds: Vec<(&str, usize, usize)> = r
            .iter()
            .map(|r| {
                let kind = if r.type_url == CLUSTER_TYPE_URL {
                    "C"
                } else {
                    "L"
                };
                (kind, r.resources.len(), r.removed_resources.len())
            })
            .collect();
        // Clusters cut into several responses, then the listener, then removals with the
        // listener first: it never refers to a cluster the proxy no longer has.
        let (updates, removals) = kinds.split_at(kinds.len() - 2);
        assert!(updates.len() > 2, "{kinds:?}");
        assert!(
            updates[..updates.len() - 1]
                .iter()
                .all(|k| k.0 == "C" && k.2 == 0)
        );
        assert_eq!(updates.iter().map(|k| k.1).sum::<usize>(), 21);
        assert_eq!(updates[updates.len() - 1], ("L", 1, 0));
        assert_eq!(removals, [("L", 0, 1), ("C", 0, 1)]);
        for r in &r {
            assert!(
                r.resources.len() == 1 || r.encoded_len() < 200,
                "{}",
                r.encoded_len()
            );
        }
        // In sync only once every part is ACKed.
        let status = |s: &StreamState| s.status().types[CLUSTER_TYPE_URL].clone();
        let (last, rest) = r.split_last().unwrap();
        for part in rest {
            s.on_request(&ack(&part.type_url, &part.nonce)).unwrap();
        }
        assert!(!status(&s).in_sync());
        s.on_request(&ack(&last.type_url, &last.nonce)).unwrap();
        assert!(status(&s).in_sync());
        assert_eq!(s.client_has(CLUSTER_TYPE_URL).len(), 20);
    }

    #[test]
    fn new_subscription_is_answered_even_when_empty() {
        let mut s = state();
        s.on_request(&subscribe(LISTENER_TYPE_URL)).unwrap();
        let r = s.responses(&ProxyResources::new(), None);
        assert_eq!(r.len(), 1);
        assert!(r[0].resources.is_empty() && r[0].removed_resources.is_empty());
        assert_eq!(r[0].type_url, LISTENER_TYPE_URL);
        // Once answered, an empty type stays quiet.
        assert!(s.responses(&ProxyResources::new(), None).is_empty());
    }

    #[test]
    fn ack_and_nack_bookkeeping() {
        let mut s = state();
        s.on_request(&subscribe(CLUSTER_TYPE_URL)).unwrap();
        let good = snapshot(&[cluster("a", proto::LbPolicy::RoundRobin)]);
        let r1 = s.responses(&good, None).remove(0);
        let o = s.on_request(&ack(CLUSTER_TYPE_URL, &r1.nonce)).unwrap();
        assert_eq!(o.acked.as_deref(), Some(r1.system_version_info.as_str()));
        assert!(!o.resend);
        let st = &s.status().types[CLUSTER_TYPE_URL];
        assert!(st.in_sync());

        let bad = snapshot(&[
            cluster("a", proto::LbPolicy::RoundRobin),
            cluster("b", proto::LbPolicy::Maglev),
        ]);
        let r2 = s.responses(&bad, None).remove(0);
        assert_eq!(names(&r2), ["b"]);
        let o = s
            .on_request(&nack(
                CLUSTER_TYPE_URL,
                &r2.nonce,
                "cluster b: no endpoints",
            ))
            .unwrap();
        assert_eq!(o.nacked.as_ref().unwrap().reason, "cluster b: no endpoints");
        let st = &s.status().types[CLUSTER_TYPE_URL];
        assert_eq!(
            st.acked_version.as_deref(),
            Some(r1.system_version_info.as_str())
        );
        assert_eq!(
            st.sent_version.as_deref(),
            Some(r2.system_version_info.as_str())
        );
        assert_eq!(
            st.last_nack.as_ref().unwrap().version,
            r2.system_version_info
        );
        assert!(!st.in_sync());
        // The rejected resource is not taken as held, and not sent again while it is
        // what the snapshot holds (no NACK loop).
        assert_eq!(s.client_has(CLUSTER_TYPE_URL).len(), 1);
        assert!(s.responses(&bad, None).is_empty());

        // Another cluster changes: only it is sent, and its ACK is partial: b is still
        // rejected, so the type is not in sync and the last full ACK stands.
        let more = snapshot(&[
            cluster("a", proto::LbPolicy::Random),
            cluster("b", proto::LbPolicy::Maglev),
        ]);
        let r3 = s.responses(&more, None).remove(0);
        assert_eq!(names(&r3), ["a"]);
        let o = s.on_request(&ack(CLUSTER_TYPE_URL, &r3.nonce)).unwrap();
        assert_eq!(o.acked, None);
        let st = &s.status().types[CLUSTER_TYPE_URL];
        assert_eq!(
            st.acked_version.as_deref(),
            Some(r1.system_version_info.as_str())
        );
        assert!(st.last_nack.is_some() && !st.in_sync());

        // b is fixed: sent, ACKed, in sync.
        let fixed = snapshot(&[
            cluster("a", proto::LbPolicy::Random),
            cluster("b", proto::LbPolicy::Random),
        ]);
        let r4 = s.responses(&fixed, None).remove(0);
        assert_eq!(names(&r4), ["b"]);
        let o = s.on_request(&ack(CLUSTER_TYPE_URL, &r4.nonce)).unwrap();
        assert_eq!(o.acked.as_deref(), Some(r4.system_version_info.as_str()));
        assert!(s.status().types[CLUSTER_TYPE_URL].in_sync());
    }

    #[test]
    fn nacked_removal_is_restored() {
        let mut s = state();
        s.on_request(&subscribe(CLUSTER_TYPE_URL)).unwrap();
        let r1 = s
            .responses(
                &snapshot(&[cluster("a", proto::LbPolicy::RoundRobin)]),
                None,
            )
            .remove(0);
        s.on_request(&ack(CLUSTER_TYPE_URL, &r1.nonce)).unwrap();
        let r2 = s.responses(&ProxyResources::new(), None).remove(0);
        assert_eq!(r2.removed_resources, ["a"]);
        s.on_request(&nack(CLUSTER_TYPE_URL, &r2.nonce, "no"))
            .unwrap();
        assert_eq!(s.client_has(CLUSTER_TYPE_URL).len(), 1);
        // Not retried for the same snapshot; a is back: nothing to send either.
        assert!(s.responses(&ProxyResources::new(), None).is_empty());
        let back = snapshot(&[cluster("a", proto::LbPolicy::RoundRobin)]);
        assert!(s.responses(&back, None).is_empty());
    }

    #[test]
    fn stale_and_unknown_nonces_are_ignored() {
        let mut s = state();
        s.on_request(&subscribe(CLUSTER_TYPE_URL)).unwrap();
        let o = s.on_request(&ack(CLUSTER_TYPE_URL, "nope")).unwrap();
        assert_eq!(o, Outcome::default());
        let o = s.on_request(&nack(CLUSTER_TYPE_URL, "nope", "x")).unwrap();
        assert_eq!(o, Outcome::default());
        assert!(s.status().types[CLUSTER_TYPE_URL].last_nack.is_none());
    }

    #[test]
    fn initial_resource_versions_skip_what_the_client_has() {
        let snap = snapshot(&[
            cluster("a", proto::LbPolicy::RoundRobin),
            cluster("b", proto::LbPolicy::RoundRobin),
        ]);
        let a_version = snap.get(CLUSTER_TYPE_URL, "a").unwrap().version.clone();
        let mut s = state();
        let mut req = subscribe(CLUSTER_TYPE_URL);
        req.initial_resource_versions = [
            ("a".to_string(), a_version),
            ("b".to_string(), "old".to_string()),
            ("gone".to_string(), "old".to_string()),
        ]
        .into_iter()
        .collect();
        s.on_request(&req).unwrap();
        let r = s.responses(&snap, None);
        assert_eq!(names(&r[0]), ["b"]);
        assert_eq!(r[1].removed_resources, ["gone"]);
    }

    #[test]
    fn named_subscriptions() {
        let snap = snapshot(&[
            cluster("a", proto::LbPolicy::RoundRobin),
            cluster("b", proto::LbPolicy::RoundRobin),
        ]);
        let mut s = state();
        let mut req = subscribe(CLUSTER_TYPE_URL);
        req.resource_names_subscribe = vec!["a".into(), "missing".into()];
        assert!(s.on_request(&req).unwrap().resend);
        let both = s.responses(&snap, None);
        let r = both[1].clone();
        assert_eq!(names(&both[0]), ["a"]);
        // A name that does not exist is reported removed, so the client stops waiting.
        assert_eq!(r.removed_resources, ["missing"]);

        // Unsubscribing needs no removal; subscribing to b sends b.
        let mut req = ack(CLUSTER_TYPE_URL, &r.nonce);
        req.resource_names_unsubscribe = vec!["a".into()];
        req.resource_names_subscribe = vec!["b".into()];
        assert!(s.on_request(&req).unwrap().resend);
        let r = s.responses(&snap, Some(CLUSTER_TYPE_URL)).remove(0);
        assert_eq!(names(&r), ["b"]);
        assert!(r.removed_resources.is_empty());

        // "*" switches to wildcard.
        let mut req = subscribe(CLUSTER_TYPE_URL);
        req.resource_names_subscribe = vec!["*".into()];
        assert!(s.on_request(&req).unwrap().resend);
        let r = s.responses(&snap, None).remove(0);
        assert_eq!(names(&r), ["a"]);
    }

    #[test]
    fn unknown_type_url_is_an_error() {
        let mut s = state();
        let err = s
            .on_request(&subscribe(
                "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ))
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("unknown type URL"), "{err}");
        assert!(err.message().contains(CLUSTER_TYPE_URL), "{err}");
        assert!(s.on_request(&subscribe("")).is_err());
    }

    #[test]
    fn pending_responses_are_bounded() {
        let mut s = state();
        s.on_request(&subscribe(CLUSTER_TYPE_URL)).unwrap();
        let mut first_nonce = None;
        for i in 0..(MAX_PENDING as u32 + 4) {
            let snap = snapshot(&[proto::Cluster {
                name: "a".into(),
                connect_timeout: Some(pbjson_types::Duration {
                    seconds: i64::from(i),
                    nanos: 0,
                }),
                ..Default::default()
            }]);
            let r = s.responses(&snap, None).remove(0);
            first_nonce.get_or_insert(r.nonce);
        }
        assert_eq!(s.types[CLUSTER_TYPE_URL].pending.len(), MAX_PENDING);
        let o = s
            .on_request(&ack(CLUSTER_TYPE_URL, &first_nonce.unwrap()))
            .unwrap();
        assert!(o.acked.is_none());
    }

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary() {
        let reason = "é".repeat(MAX_REASON_LEN);
        let cut = bounded_reason(&reason);
        assert!(cut.len() <= MAX_REASON_LEN + 3);
        assert!(cut.ends_with("..."));
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        /// One step of a client, or of the control plane.
        #[derive(Debug, Clone)]
        enum Step {
            Request {
                type_url: usize,
                subscribe: Vec<usize>,
                unsubscribe: Vec<usize>,
                initial: Vec<(usize, u8)>,
                /// Answer the n-th response sent so far (or a made-up nonce past the end).
                answer: Option<usize>,
                nack: bool,
            },
            Publish(Vec<(usize, u8)>),
        }

        const TYPES: [&str; 4] = [CLUSTER_TYPE_URL, LISTENER_TYPE_URL, "", "garbage"];
        const NAMES: [&str; 5] = ["a", "b", "c", "*", ""];

        fn step() -> impl Strategy<Value = Step> {
            let names = || proptest::collection::vec(0..NAMES.len(), 0..3);
            prop_oneof![
                (
                    0..TYPES.len(),
                    names(),
                    names(),
                    proptest::collection::vec((0..NAMES.len(), 0u8..3), 0..3),
                    proptest::option::of(0usize..40),
                    any::<bool>()
                )
                    .prop_map(
                        |(type_url, subscribe, unsubscribe, initial, answer, nack)| {
                            Step::Request {
                                type_url,
                                subscribe,
                                unsubscribe,
                                initial,
                                answer,
                                nack,
                            }
                        }
                    ),
                proptest::collection::vec((0usize..3, 0u8..3), 0..4).prop_map(Step::Publish),
            ]
        }

        proptest! {
            /// Whatever a client sends, the state machine neither panics nor sends a
            /// resource the snapshot does not hold, nor lets its unanswered responses pile up.
            #[test]
            fn any_request_sequence_is_handled(steps in proptest::collection::vec(step(), 0..40)) {
                let mut s = state();
                let mut snap = ProxyResources::new();
                let mut sent: Vec<DeltaDiscoveryResponse> = Vec::new();
                for st in steps {
                    let responses = match st {
                        Step::Publish(items) => {
                            snap = ProxyResources::new();
                            for (n, generation) in items {
                                snap.insert(&proto::Cluster {
                                    name: NAMES[n].into(),
                                    lb_policy: i32::from(generation),
                                    ..Default::default()
                                });
                            }
                            s.responses(&snap, None)
                        }
                        Step::Request { type_url, subscribe, unsubscribe, initial, answer, nack } => {
                            let req = DeltaDiscoveryRequest {
                                type_url: TYPES[type_url].into(),
                                resource_names_subscribe: subscribe.iter().map(|&i| NAMES[i].into()).collect(),
                                resource_names_unsubscribe: unsubscribe.iter().map(|&i| NAMES[i].into()).collect(),
                                initial_resource_versions: initial.iter().map(|&(i, v)| (NAMES[i].into(), v.to_string())).collect(),
                                response_nonce: answer
                                    .map(|n| sent.get(n).map_or_else(|| format!("x{n}"), |r| r.nonce.clone()))
                                    .unwrap_or_default(),
                                error_detail: nack.then(|| RpcStatus { code: 3, message: "no".into(), details: vec![] }),
                                ..Default::default()
                            };
                            match s.on_request(&req) {
                                Ok(o) if o.resend => s.responses(&snap, Some(TYPES[type_url])),
                                Ok(_) => Vec::new(),
                                Err(e) => {
                                    prop_assert_eq!(e.code(), tonic::Code::InvalidArgument);
                                    Vec::new()
                                }
                            }
                        }
                    };
                    for r in &responses {
                        for res in &r.resources {
                            let held = snap.get(&r.type_url, &res.name);
                            prop_assert_eq!(held.map(|h| &h.version), Some(&res.version));
                        }
                    }
                    sent.extend(responses);
                    for t in s.types.values() {
                        prop_assert!(t.pending.len() <= MAX_PENDING);
                    }
                }
            }

            /// A wildcard client that applies what it is sent, or rejects it, converges on
            /// the snapshot whatever mix of own and shared resources (shared sets reused
            /// across versions or not) the server publishes.
            #[test]
            fn a_client_converges_on_layered_snapshots(
                steps in proptest::collection::vec(converge_step(), 0..30)
            ) {
                let mut s = state();
                s.on_request(&subscribe(CLUSTER_TYPE_URL)).unwrap();
                let mut client: BTreeMap<String, String> = BTreeMap::new();
                let mut unanswered: VecDeque<DeltaDiscoveryResponse> = VecDeque::new();
                let mut snap = ProxyResources::new();
                let mut last_shared: Option<Arc<ResourceMap>> = None;
                let apply = |client: &mut BTreeMap<String, String>, r: &DeltaDiscoveryResponse| {
                    for res in &r.resources {
                        client.insert(res.name.clone(), res.version.clone());
                    }
                    for n in &r.removed_resources {
                        client.remove(n);
                    }
                };
                unanswered.extend(s.responses(&snap, None));
                for st in steps {
                    match st {
                        ConvergeStep::Publish { items, reuse } => {
                            snap = layered(&items, reuse, &mut last_shared, 0);
                            unanswered.extend(s.responses(&snap, None));
                        }
                        ConvergeStep::Answer { nack: reject } => {
                            if let Some(r) = unanswered.pop_front() {
                                if reject {
                                    s.on_request(&nack(CLUSTER_TYPE_URL, &r.nonce, "no")).unwrap();
                                } else {
                                    apply(&mut client, &r);
                                    s.on_request(&ack(CLUSTER_TYPE_URL, &r.nonce)).unwrap();
                                }
                            }
                        }
                    }
                }
                // Every name changes once more (which lifts every rejection); the client
                // then takes everything.
                let all: Vec<(usize, u8, bool)> = (0..NAMES.len()).map(|i| (i, 9, i % 2 == 0)).collect();
                snap = layered(&all, false, &mut last_shared, 1);
                unanswered.extend(s.responses(&snap, None));
                while let Some(r) = unanswered.pop_front() {
                    apply(&mut client, &r);
                    s.on_request(&ack(CLUSTER_TYPE_URL, &r.nonce)).unwrap();
                    unanswered.extend(s.responses(&snap, None));
                }
                let want: BTreeMap<String, String> = snap
                    .iter(CLUSTER_TYPE_URL)
                    .map(|(n, r)| (n.to_string(), r.version.clone()))
                    .collect();
                prop_assert_eq!(&client, &want);
                prop_assert_eq!(&s.client_has(CLUSTER_TYPE_URL), &want);
                prop_assert!(s.status().types[CLUSTER_TYPE_URL].in_sync());
            }
        }

        #[derive(Debug, Clone)]
        enum ConvergeStep {
            /// (name, generation, shared?) items; `reuse`: keep the last shared set when
            /// it holds the same content.
            Publish {
                items: Vec<(usize, u8, bool)>,
                reuse: bool,
            },
            Answer {
                nack: bool,
            },
        }

        fn converge_step() -> impl Strategy<Value = ConvergeStep> {
            prop_oneof![
                (
                    proptest::collection::vec((0..NAMES.len(), 0u8..3, any::<bool>()), 0..5),
                    any::<bool>()
                )
                    .prop_map(|(items, reuse)| ConvergeStep::Publish { items, reuse }),
                any::<bool>().prop_map(|nack| ConvergeStep::Answer { nack }),
            ]
        }

        /// A snapshot of clusters, some as own resources and some in one shared set.
        fn layered(
            items: &[(usize, u8, bool)],
            reuse: bool,
            last: &mut Option<Arc<ResourceMap>>,
            salt: i32,
        ) -> ProxyResources {
            let c = |n: usize, g: u8| proto::Cluster {
                name: format!("c{n}"),
                lb_policy: i32::from(g) + salt * 10,
                ..Default::default()
            };
            let mut snap = ProxyResources::new();
            let mut shared = ResourceMap::new();
            for &(n, g, in_shared) in items {
                if in_shared {
                    let (name, r) = crate::resource::versioned(&c(n, g));
                    shared.insert(name, r);
                } else {
                    snap.insert(&c(n, g));
                }
            }
            let shared = match last.take() {
                Some(l) if reuse && *l == shared => l,
                _ => Arc::new(shared),
            };
            *last = Some(shared.clone());
            snap.share(CLUSTER_TYPE_URL, shared);
            snap
        }
    }
}
