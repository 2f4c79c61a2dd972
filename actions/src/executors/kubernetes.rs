//! `kubernetes`: cordon, uncordon and drain nodes through the API server.
//!
//! - `cordon` sets `spec.unschedulable`, adds the `NoSchedule` taint
//!   `remedy.io/unhealthy` (value: the fault) and the annotations
//!   `remedy.io/cordoned-by` (the job id), `remedy.io/fault` and
//!   `remedy.io/reason`. A node an operator already cordoned is left exactly
//!   as it is, without remedy's mark, so remedy never uncordons it.
//! - `uncordon` undoes only what remedy did: a node without
//!   `remedy.io/cordoned-by` is never touched.
//! - `drain` cordons, then evicts every pod on the node through the Eviction
//!   API (so PodDisruptionBudgets are honoured), skipping DaemonSet pods,
//!   mirror pods and pods that already finished, and waits for the evicted
//!   pods to be gone (reading each one; the node's pods are listed once).
//!   An eviction a budget refuses (429) is retried with backoff; after
//!   `timeout` the drain fails naming the pods that would not leave. Pods
//!   without a controller are evicted like any other: the node is being
//!   taken out of service.
//!
//! - Gates (contract 10): a job whose intent has the param `gates`
//!   (`KubeletOK=false,DiskOK=true,NetOK=unknown`), whatever its op, also
//!   writes them to the node. Its taints `remedy.io/gate-<Condition>`
//!   (`NoSchedule`, no value) are remedy's alone and follow the gates on any
//!   node, also one an operator cordoned (whose cordon stays): `cordon` and
//!   `drain` make them exactly the gates not true, `uncordon` only removes
//!   (all of them when every gate is true, else it keeps those of the gates
//!   still not true). They go in the node's patch. Then one strategic merge
//!   patch of the `status` subresource sets the condition
//!   `remedy.io/<Condition>` of each gate (`True|False|Unknown`, reason
//!   `RemedyGate`) and `RemedyReady` (`True` only when every gate is; the
//!   message names the gates that are not). Conditions merge by type, so
//!   the kubelet's stay; `lastTransitionTime` stays while a condition's
//!   status does. A `gates` that does not parse, or a condition that cannot
//!   name a taint, fails the job before any call.
//!
//! Node changes are one JSON merge patch carrying the `resourceVersion` read
//! just before, so a node changed in between (409) is read and patched again
//! rather than overwritten; the taint list is sent whole, the node's other
//! taints kept. Everything is idempotent on the job id: a retried job finds
//! its own work done and succeeds without a change. Any error status of the
//! API server fails the job with the status and the server's message (which
//! is what feeds the breaker); no error carries a credential.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::core::Request;
use kube::{Api, Client, Resource};
use remedy_engine::{Backoff, Duration, Timestamp};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{BoxFuture, ConfigError, ExecError, Executor, Job};

/// The taint remedy puts on the nodes it cordons (effect `NoSchedule`).
pub const TAINT: &str = "remedy.io/unhealthy";
/// Annotation: the id of the job that cordoned the node; its presence is
/// what lets `uncordon` touch a node.
pub const CORDONED_BY: &str = "remedy.io/cordoned-by";
/// Annotation: the fault the node was cordoned for.
pub const FAULT: &str = "remedy.io/fault";
/// Annotation: the fault's reason, when it has one.
pub const REASON: &str = "remedy.io/reason";
/// The taint of a gate that is not true: `remedy.io/gate-<Condition>`
/// (effect `NoSchedule`, no value).
pub const GATE_TAINT: &str = "remedy.io/gate-";
/// The Node condition of a gate: `remedy.io/<Condition>`.
pub const GATE_CONDITION: &str = "remedy.io/";
/// The Node condition that is `True` only when every gate is.
pub const READY_CONDITION: &str = "RemedyReady";
/// The reason of every gate's condition.
const GATE_REASON: &str = "RemedyGate";
/// What the executor calls on the API server, as (resource, verb) of the
/// core API group: what its ClusterRole (deploy/kubernetes/rbac.yaml) must
/// grant, no more.
pub const API_CALLS: &[(&str, &str)] = &[
    ("nodes", "get"),
    ("nodes", "list"), // the node list as aliases: DIRECTORY_CALLS
    ("nodes", "patch"),
    ("nodes/status", "patch"),
    ("pods", "get"),
    ("pods", "list"),
    ("pods/eviction", "create"),
];
/// Of [`API_CALLS`], those of [`NodeDirectory`] (`[identity] kubernetes =
/// true`) rather than of an action.
pub const DIRECTORY_CALLS: &[(&str, &str)] = &[("nodes", "list")];
/// The annotation the kubelet puts on mirror pods (static pods' shadows).
const MIRROR: &str = "kubernetes.io/config.mirror";
/// The field manager named in every patch (visible in `managedFields`).
const FIELD_MANAGER: &str = "remedy";
/// How often a node is read and patched again when it keeps changing (409).
const CONFLICT_RETRIES: usize = 3;
/// Time a drain keeps beyond its own deadline to report what did not leave.
const REPORT_MARGIN: Duration = Duration::from_secs(5);
/// At most this many pods are named in a failed drain's reason.
const NAMED_PODS: usize = 20;

/// `[actions.NAME] executor = "kubernetes"`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Path of a kubeconfig (`~` is the home directory). Default: the
    /// in-cluster service account, then `$KUBECONFIG` or `~/.kube/config`.
    #[serde(default)]
    pub kubeconfig: Option<String>,
    /// Context of the kubeconfig to use. Default: its current context.
    #[serde(default)]
    pub context: Option<String>,
    /// Longest the operation may take. Default 60s for cordon and
    /// uncordon, 10m for drain (which then fails naming the pods that
    /// would not leave; it is given 5s more to say so).
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// drain only: `gracePeriodSeconds` of every eviction. Default: each
    /// pod's own `terminationGracePeriodSeconds`.
    #[serde(default)]
    pub grace_period: Option<u32>,
}

/// What the executor does to a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Cordon,
    Uncordon,
    Drain,
}

impl Op {
    fn parse(name: &str) -> Option<Op> {
        match name {
            "cordon" => Some(Op::Cordon),
            "uncordon" => Some(Op::Uncordon),
            "drain" => Some(Op::Drain),
            _ => None,
        }
    }

    fn default_timeout(self) -> Duration {
        match self {
            Op::Cordon | Op::Uncordon => Duration::from_secs(60),
            Op::Drain => Duration::from_secs(600),
        }
    }
}

/// The `kubernetes` executor: one client, one operation.
pub struct Kubernetes {
    op: Op,
    client: Client,
    /// `scheme://host:port` of the API server, for error messages.
    server: String,
    timeout: Duration,
    grace_period: Option<u32>,
}

impl std::fmt::Debug for Kubernetes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubernetes")
            .field("op", &self.op)
            .field("server", &self.server)
            .field("timeout", &self.timeout)
            .field("grace_period", &self.grace_period)
            .finish()
    }
}

/// The settings as read, without building a client: `op` must be an
/// operation of this executor, `grace_period` only goes with a drain.
pub fn check(action: &str, op: &str, config: &Config) -> Result<(), ConfigError> {
    checked(action, op, config).map(drop)
}

fn checked(action: &str, op: &str, config: &Config) -> Result<(Op, Duration), ConfigError> {
    let parsed = Op::parse(op).ok_or_else(|| {
        ConfigError::new(
            action,
            format!("op: {op:?} is not an operation of the kubernetes executor; expected cordon, uncordon or drain"),
        )
    })?;
    if config.grace_period.is_some() && parsed != Op::Drain {
        return Err(ConfigError::new(
            action,
            "grace_period: only a drain evicts pods; remove it or set op = \"drain\"",
        ));
    }
    let timeout = config.timeout.unwrap_or(parsed.default_timeout());
    if timeout.0 <= 0 {
        return Err(ConfigError::new(action, "timeout: must be longer than 0s"));
    }
    Ok((parsed, timeout))
}

impl Kubernetes {
    /// Checks the settings and builds the client (reading the kubeconfig or
    /// the in-cluster service account; nothing is sent yet).
    pub async fn new(action: &str, op: &str, config: Config) -> Result<Kubernetes, ConfigError> {
        let (op, timeout) = checked(action, op, &config)?;
        let (client, server) = connect(action, &config).await?;
        Ok(Kubernetes {
            op,
            client,
            server,
            timeout,
            grace_period: config.grace_period,
        })
    }

    async fn run(&self, job: &Job) -> Result<String, ExecError> {
        let node = &job.intent.node;
        let gates = Gates::of(job)?;
        let gates = gates.as_ref();
        match self.op {
            Op::Cordon => {
                let (cordon, touched) = self.cordon(job, gates).await?;
                let done = match cordon {
                    Cordon::Done => format!("cordoned {node} (taint {TAINT})"),
                    Cordon::Already => format!("{node} already cordoned by remedy"),
                    Cordon::ByOperator => format!(
                        "{node} already cordoned by an operator: left as it is, remedy will not uncordon it"
                    ),
                };
                self.report_gates(job, gates, &touched, done).await
            }
            Op::Uncordon => {
                let (done, touched) = self.uncordon(node, gates).await?;
                self.report_gates(job, gates, &touched, done).await
            }
            Op::Drain => self.drain(job, gates).await,
        }
    }

    /// With gates, writes their conditions and adds what was done to them
    /// to `done`; without, answers `done`.
    async fn report_gates(
        &self,
        job: &Job,
        gates: Option<&Gates>,
        touched: &Touched,
        done: String,
    ) -> Result<String, ExecError> {
        let Some(gates) = gates else {
            return Ok(done);
        };
        match self.write_conditions(job, gates, touched).await {
            Ok(()) => Ok(format!("{done}; {}", gates.summary(touched))),
            Err(e) => Err(e.after(&done)),
        }
    }

    /// One strategic merge patch of the node's `status`: the gates'
    /// conditions and `RemedyReady` (see the module doc).
    async fn write_conditions(
        &self,
        job: &Job,
        gates: &Gates,
        touched: &Touched,
    ) -> Result<(), CallError> {
        let name = &job.intent.node;
        let why = format!("remedy {} for {}", job.intent.action, job.intent.fault);
        let patch = gates.conditions(&touched.conditions, &now_rfc3339(), &why);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let request = Request::new(Node::url_path(&(), None)).patch_subresource(
            "status",
            name,
            &params,
            &Patch::Strategic(&patch),
        );
        self.send(format!("PATCH status of node {name}"), request)
            .await
    }

    /// Reads a node.
    async fn node(&self, name: &str) -> Result<Node, CallError> {
        let api: Api<Node> = Api::all(self.client.clone());
        api.get(name)
            .await
            .map_err(|e| self.call_error(format!("GET node {name}"), e))
    }

    /// Sends one merge patch to a node.
    async fn patch_node(&self, name: &str, patch: &Value) -> Result<(), CallError> {
        let what = || format!("PATCH node {name}");
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let request =
            Request::new(Node::url_path(&(), None)).patch(name, &params, &Patch::Merge(patch));
        self.send(what(), request).await
    }

    /// Sends a request built for the API server, answering only whether it
    /// succeeded.
    async fn send(
        &self,
        what: String,
        request: Result<http::Request<Vec<u8>>, kube::core::request::Error>,
    ) -> Result<(), CallError> {
        let request = request.map_err(|e| CallError::Request {
            what: what.clone(),
            why: e.to_string(),
        })?;
        self.client
            .request_text(request)
            .await
            .map(drop)
            .map_err(|e| self.call_error(what, e))
    }

    /// Cordons the node of `job` unless it already is, and makes its gate
    /// taints those of the gates not true (see the module doc).
    async fn cordon(
        &self,
        job: &Job,
        gates: Option<&Gates>,
    ) -> Result<(Cordon, Touched), ExecError> {
        let name = &job.intent.node;
        for _ in 0..CONFLICT_RETRIES {
            let node = self.node(name).await?;
            let state = NodeState::of(&node);
            let tainted = state.taints.iter().any(|t| t["key"] == TAINT);
            let cordon = if state.unschedulable && !state.marked {
                Cordon::ByOperator
            } else if state.unschedulable && state.marked && tainted {
                Cordon::Already
            } else {
                Cordon::Done
            };
            let mut patch = json!({});
            let mut taints = state.taints.clone();
            if cordon == Cordon::Done {
                let mut annotations = json!({ CORDONED_BY: job.id, FAULT: job.intent.fault });
                if let Some(reason) = &job.intent.reason {
                    annotations[REASON] = json!(clip(reason, 1024));
                }
                patch = json!({
                    "metadata": { "annotations": annotations },
                    "spec": { "unschedulable": true },
                });
                if !tainted {
                    taints.push(json!({
                        "key": TAINT,
                        "value": taint_value(&job.intent.fault),
                        "effect": "NoSchedule",
                    }));
                }
            }
            if let Some(gates) = gates {
                taints = gates.taints(&taints, true);
            }
            let touched = Touched::of(&state, &taints);
            if taints != state.taints {
                patch["spec"]["taints"] = Value::Array(taints);
            }
            if patch == json!({}) {
                return Ok((cordon, touched));
            }
            state.precondition(&mut patch);
            match self.patch_node(name, &patch).await {
                Ok(()) => return Ok((cordon, touched)),
                Err(e) if e.code() == Some(409) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(changing(name))
    }

    /// Uncordons the node if remedy cordoned it, and removes the taints of
    /// the gates that are true (see the module doc).
    async fn uncordon(
        &self,
        name: &str,
        gates: Option<&Gates>,
    ) -> Result<(String, Touched), ExecError> {
        for _ in 0..CONFLICT_RETRIES {
            let node = self.node(name).await?;
            let state = NodeState::of(&node);
            let tainted = state.taints.iter().any(|t| t["key"] == TAINT);
            let mut patch = json!({});
            let mut taints = state.taints.clone();
            let done = if state.marked {
                patch = json!({
                    "metadata": {
                        "annotations": { CORDONED_BY: null, FAULT: null, REASON: null },
                    },
                    "spec": { "unschedulable": false },
                });
                if tainted {
                    taints.retain(|t| t["key"] != TAINT);
                    format!("uncordoned {name} (taint {TAINT} removed)")
                } else {
                    format!("uncordoned {name}")
                }
            } else if state.unschedulable {
                format!("{name} was cordoned by an operator, not by remedy: left cordoned")
            } else {
                format!("{name} already schedulable")
            };
            if let Some(gates) = gates {
                taints = gates.taints(&taints, false);
            }
            let touched = Touched::of(&state, &taints);
            if taints != state.taints {
                patch["spec"]["taints"] = Value::Array(taints);
            }
            if patch == json!({}) {
                return Ok((done, touched));
            }
            state.precondition(&mut patch);
            match self.patch_node(name, &patch).await {
                Ok(()) => return Ok((done, touched)),
                Err(e) if e.code() == Some(409) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(changing(name))
    }

    /// Every pod bound to a node.
    async fn pods(&self, node: &str) -> Result<Vec<Pod>, CallError> {
        let api: Api<Pod> = Api::all(self.client.clone());
        let params = ListParams::default().fields(&format!("spec.nodeName={node}"));
        api.list(&params)
            .await
            .map(|list| list.items)
            .map_err(|e| self.call_error(format!("GET pods on {node}"), e))
    }

    /// Whether an evicted pod is still there (a pod of the same name and a
    /// new uid is another one).
    async fn still_there(&self, pod: &Target) -> Result<bool, CallError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        match api.get(&pod.name).await {
            Ok(now) => Ok(pod.uid.is_none() || now.metadata.uid == pod.uid),
            Err(kube::Error::Api(r)) if r.code == 404 => Ok(false),
            Err(e) => Err(self.call_error(format!("GET pod {}", pod.show()), e)),
        }
    }

    /// Asks the Eviction API to evict one pod.
    async fn evict(&self, pod: &Target) -> Result<(), CallError> {
        let what = || format!("POST eviction of {}", pod.show());
        let mut body = json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": { "name": pod.name, "namespace": pod.namespace },
        });
        if let Some(seconds) = self.grace_period {
            body["deleteOptions"] = json!({ "gracePeriodSeconds": seconds });
        }
        let request = Request::new(Pod::url_path(&(), Some(&pod.namespace))).create_subresource(
            "eviction",
            &pod.name,
            &PostParams::default(),
            body.to_string().into_bytes(),
        );
        self.send(what(), request).await
    }

    /// Cordons, evicts and waits, all before `timeout` (see the module doc).
    async fn drain(&self, job: &Job, gates: Option<&Gates>) -> Result<String, ExecError> {
        let name = &job.intent.node;
        let deadline = Instant::now() + std_duration(self.timeout);
        let timed_out = |doing: &str| {
            ExecError::Transient(format!(
                "drain of {name} timed out after {} while {doing}",
                self.timeout
            ))
        };
        let (cordon, touched) = within(deadline, self.cordon(job, gates))
            .await
            .ok_or_else(|| timed_out("cordoning"))??;
        if let Some(gates) = gates {
            within(deadline, self.write_conditions(job, gates, &touched))
                .await
                .ok_or_else(|| timed_out("writing its gates' conditions"))?
                .map_err(|e| e.after(&format!("drain of {name} stopped before evicting")))?;
        }
        let pods = within(deadline, self.pods(name))
            .await
            .ok_or_else(|| timed_out("listing its pods"))??;

        let (mut skipped, mut finished) = (0, 0);
        let mut pending = Vec::new();
        for pod in &pods {
            match Target::of(pod) {
                Plan::Skip => skipped += 1,
                Plan::Finished => finished += 1,
                Plan::Evict(target) => pending.push(target),
            }
        }
        let evicted = pending.len();
        // Evicted and still on the node.
        let mut leaving: Vec<Target> = Vec::new();
        let mut backoff = EVICTION_RETRY.delays();
        loop {
            pending = self.evict_all(pending, &mut leaving, deadline).await?;
            leaving = self.still_leaving(leaving, deadline).await?;
            if pending.is_empty() && leaving.is_empty() {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(would_not_leave(name, self.timeout, &pending, &leaving));
            }
            let wait = backoff.next().unwrap_or_default();
            tokio::time::sleep(wait.min(deadline - now)).await;
        }

        let by = match cordon {
            Cordon::ByOperator => " (cordoned by an operator)",
            Cordon::Done | Cordon::Already => "",
        };
        let mut summary = format!(
            "drained {name}{by}: {evicted} {} evicted, {skipped} skipped (DaemonSet/mirror)",
            plural(evicted)
        );
        if finished > 0 {
            summary.push_str(&format!(", {finished} already finished"));
        }
        if let Some(gates) = gates {
            summary = format!("{summary}; {}", gates.summary(&touched));
        }
        Ok(summary)
    }

    /// Asks for the eviction of each pod until `deadline`: those evicted go
    /// to `leaving`, those refused (or not asked for in time) come back.
    async fn evict_all(
        &self,
        pods: Vec<Target>,
        leaving: &mut Vec<Target>,
        deadline: Instant,
    ) -> Result<Vec<Target>, ExecError> {
        let mut refused = Vec::new();
        let mut queue = pods.into_iter();
        while let Some(mut pod) = queue.next() {
            match within(deadline, self.evict(&pod)).await {
                None => {
                    refused.push(pod);
                    refused.extend(queue.by_ref());
                }
                Some(Ok(())) => leaving.push(pod),
                // Already gone.
                Some(Err(e)) if e.code() == Some(404) => {}
                // A PodDisruptionBudget (or the server's own rate limit)
                // says not now: ask again after a while.
                Some(Err(e)) if e.code() == Some(429) => {
                    pod.refused = Some(e.message());
                    refused.push(pod);
                }
                Some(Err(e)) => return Err(e.into()),
            }
        }
        Ok(refused)
    }

    /// The evicted pods still there (or not looked at before `deadline`).
    /// One read per pod: listing the node's pods again may make the API
    /// server read every pod of the cluster.
    async fn still_leaving(
        &self,
        pods: Vec<Target>,
        deadline: Instant,
    ) -> Result<Vec<Target>, ExecError> {
        let mut staying = Vec::new();
        let mut queue = pods.into_iter();
        while let Some(pod) = queue.next() {
            match within(deadline, self.still_there(&pod)).await {
                None => {
                    staying.push(pod);
                    staying.extend(queue.by_ref());
                }
                Some(Ok(true)) => staying.push(pod),
                Some(Ok(false)) => {}
                Some(Err(e)) => return Err(e.into()),
            }
        }
        Ok(staying)
    }

    /// Names what went wrong with a call, without the client's credentials.
    fn call_error(&self, what: String, e: kube::Error) -> CallError {
        match e {
            kube::Error::Api(r) => CallError::Status {
                what,
                code: r.code,
                reason: r.reason,
                message: r.message,
            },
            other => CallError::Transport {
                what,
                server: self.server.clone(),
                why: describe(&other),
            },
        }
    }
}

impl Executor for Kubernetes {
    fn execute<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<String, ExecError>> {
        Box::pin(self.run(job))
    }

    fn timeout(&self) -> Duration {
        match self.op {
            Op::Cordon | Op::Uncordon => self.timeout,
            // A drain stops at `timeout` and still needs to say why.
            Op::Drain => Duration(self.timeout.0 + REPORT_MARGIN.0),
        }
    }
}

/// What `cordon` found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cordon {
    /// Cordoned now.
    Done,
    /// remedy had cordoned it already: nothing changed.
    Already,
    /// An operator had cordoned it: nothing changed, no mark added.
    ByOperator,
}

/// The parts of a node `cordon` and `uncordon` look at.
struct NodeState {
    unschedulable: bool,
    /// Carries `remedy.io/cordoned-by`.
    marked: bool,
    /// Its taints as read, to send back whole.
    taints: Vec<Value>,
    /// Its conditions as read (`type`, `status`, `lastTransitionTime`...).
    conditions: Vec<Value>,
    version: Option<String>,
}

impl NodeState {
    fn of(node: &Node) -> NodeState {
        let spec = node.spec.as_ref();
        NodeState {
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            marked: node
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(CORDONED_BY)),
            taints: spec
                .and_then(|s| s.taints.as_ref())
                .map(|taints| {
                    taints
                        .iter()
                        // A taint that does not serialize (none does) is
                        // sent as null, which the API server refuses: never
                        // silently dropped from the node.
                        .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
                        .collect()
                })
                .unwrap_or_default(),
            conditions: node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .map(|conditions| {
                    conditions
                        .iter()
                        .filter_map(|c| serde_json::to_value(c).ok())
                        .collect()
                })
                .unwrap_or_default(),
            version: node.metadata.resource_version.clone(),
        }
    }

    /// Makes `patch` apply only to the node as read: the API server refuses
    /// it (409) if the node changed since.
    fn precondition(&self, patch: &mut Value) {
        if let Some(version) = &self.version {
            patch["metadata"]["resourceVersion"] = json!(version);
        }
    }
}

/// What a cordon or uncordon left of a node, for its gates' conditions and
/// its answer.
#[derive(Debug)]
struct Touched {
    /// The node's conditions as read before the patch.
    conditions: Vec<Value>,
    /// Gate taints (keys) the patch added.
    added: Vec<String>,
    /// Gate taints (keys) the patch removed.
    removed: Vec<String>,
}

impl Touched {
    /// The node as read in `state`, its taints becoming `taints`.
    fn of(state: &NodeState, taints: &[Value]) -> Touched {
        let keys = |list: &[Value]| -> Vec<String> {
            let mut keys: Vec<String> = list
                .iter()
                .filter(|t| is_gate_taint(t))
                .filter_map(|t| t["key"].as_str().map(str::to_string))
                .collect();
            keys.dedup();
            keys
        };
        let (before, after) = (keys(&state.taints), keys(taints));
        Touched {
            conditions: state.conditions.clone(),
            added: after
                .iter()
                .filter(|k| !before.contains(k))
                .cloned()
                .collect(),
            removed: before
                .iter()
                .filter(|k| !after.contains(k))
                .cloned()
                .collect(),
        }
    }
}

/// What remedy last observed of a gate's condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GateState {
    True,
    False,
    Unknown,
}

impl GateState {
    fn parse(word: &str) -> Option<GateState> {
        match word {
            "true" => Some(GateState::True),
            "false" => Some(GateState::False),
            "unknown" => Some(GateState::Unknown),
            _ => None,
        }
    }

    /// As in the `gates` param.
    fn word(self) -> &'static str {
        match self {
            GateState::True => "true",
            GateState::False => "false",
            GateState::Unknown => "unknown",
        }
    }

    /// A Node condition's `status`.
    fn status(self) -> &'static str {
        match self {
            GateState::True => "True",
            GateState::False => "False",
            GateState::Unknown => "Unknown",
        }
    }
}

/// One gate of the `gates` param.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Gate {
    condition: String,
    state: GateState,
}

impl Gate {
    fn taint_key(&self) -> String {
        format!("{GATE_TAINT}{}", self.condition)
    }

    fn taint(&self) -> Value {
        json!({ "key": self.taint_key(), "effect": "NoSchedule" })
    }
}

/// A job's `gates` param, in its order: what the node's gate conditions
/// and taints are made to say.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Gates {
    /// As the param says it (for answers).
    text: String,
    gates: Vec<Gate>,
}

impl Gates {
    /// The gates of `job`'s intent, if it has any.
    fn of(job: &Job) -> Result<Option<Gates>, GatesError> {
        let node = &job.intent.node;
        let Some(text) = job.intent.param("gates") else {
            return Ok(None);
        };
        let malformed = |item: &str| GatesError::Malformed {
            node: node.clone(),
            item: item.to_string(),
            gates: text.to_string(),
        };
        let mut gates: Vec<Gate> = Vec::new();
        for item in text.split(',') {
            let (condition, state) = item.split_once('=').ok_or_else(|| malformed(item))?;
            let state = GateState::parse(state.trim()).ok_or_else(|| malformed(item))?;
            let condition = condition.trim();
            if condition.is_empty() {
                return Err(malformed(item));
            }
            if !taint_name(&format!("gate-{condition}")) {
                return Err(GatesError::NoTaintKey {
                    node: node.clone(),
                    condition: condition.to_string(),
                });
            }
            if gates.iter().any(|g| g.condition == condition) {
                return Err(GatesError::Twice {
                    node: node.clone(),
                    condition: condition.to_string(),
                    gates: text.to_string(),
                });
            }
            gates.push(Gate {
                condition: condition.to_string(),
                state,
            });
        }
        Ok(Some(Gates {
            text: text.to_string(),
            gates,
        }))
    }

    fn all_true(&self) -> bool {
        self.gates.iter().all(|g| g.state == GateState::True)
    }

    fn not_true(&self) -> impl Iterator<Item = &Gate> {
        self.gates.iter().filter(|g| g.state != GateState::True)
    }

    /// `taints` with its gate taints made those of the gates not true: all
    /// of them (`add`, cordon and drain), or those already there (uncordon).
    /// Every other taint is kept, in its place.
    fn taints(&self, taints: &[Value], add: bool) -> Vec<Value> {
        let there = |key: &str| taints.iter().any(|t| t["key"] == key);
        let wanted: Vec<Value> = self
            .not_true()
            .filter(|g| add || there(&g.taint_key()))
            .map(Gate::taint)
            .collect();
        let mut out: Vec<Value> = taints
            .iter()
            .filter(|t| !is_gate_taint(t) || wanted.contains(t))
            .cloned()
            .collect();
        for taint in wanted {
            if !out.contains(&taint) {
                out.push(taint);
            }
        }
        out
    }

    /// The strategic merge patch of a node's status setting each gate's
    /// condition and `RemedyReady` at `now`; `read`: the node's conditions
    /// before, whose `lastTransitionTime` stays while the status does.
    fn conditions(&self, read: &[Value], now: &str, why: &str) -> Value {
        let condition = |type_: &str, status: &str, reason: &str, message: String| {
            let since = read
                .iter()
                .find(|c| c["type"] == type_ && c["status"] == status)
                .and_then(|c| c["lastTransitionTime"].as_str())
                .unwrap_or(now);
            json!({
                "type": type_,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": since,
            })
        };
        let mut conditions: Vec<Value> = self
            .gates
            .iter()
            .map(|g| {
                condition(
                    &format!("{GATE_CONDITION}{}", g.condition),
                    g.state.status(),
                    GATE_REASON,
                    format!("gate {} is {} ({why})", g.condition, g.state.word()),
                )
            })
            .collect();
        let ready = if self.all_true() {
            let all: Vec<&str> = self.gates.iter().map(|g| g.condition.as_str()).collect();
            condition(
                READY_CONDITION,
                "True",
                "GatesTrue",
                format!("every gate is true: {} ({why})", all.join(", ")),
            )
        } else {
            let not: Vec<String> = self
                .not_true()
                .map(|g| format!("{} ({})", g.condition, g.state.word()))
                .collect();
            condition(
                READY_CONDITION,
                "False",
                "GatesNotTrue",
                format!("gates not true: {} ({why})", not.join(", ")),
            )
        };
        conditions.push(ready);
        json!({ "status": { "conditions": conditions } })
    }

    /// What the job did with the gates, for its answer.
    fn summary(&self, touched: &Touched) -> String {
        let ready = if self.all_true() { "True" } else { "False" };
        let mut out = format!("gates {}: {READY_CONDITION} {ready}", self.text);
        if !touched.added.is_empty() {
            out.push_str(&format!(", tainted {}", touched.added.join(", ")));
        }
        if !touched.removed.is_empty() {
            out.push_str(&format!(", untainted {}", touched.removed.join(", ")));
        }
        out
    }
}

/// A taint remedy keeps for a gate.
fn is_gate_taint(taint: &Value) -> bool {
    taint["key"]
        .as_str()
        .is_some_and(|k| k.starts_with(GATE_TAINT))
}

/// Whether `name` can be the name part of a taint key (a qualified name:
/// at most 63 of `A-Z a-z 0-9 - _ .`, alphanumeric at both ends).
fn taint_name(name: &str) -> bool {
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    name.len() <= 63
        && ends(name.chars().next())
        && ends(name.chars().last())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Why a job's `gates` param cannot be written to its node: the job fails
/// before any call.
#[derive(Debug, thiserror::Error)]
enum GatesError {
    #[error(
        "gates of node {node}: {item:?} is not CONDITION=true|false|unknown (gates = {gates:?})"
    )]
    Malformed {
        node: String,
        item: String,
        gates: String,
    },
    #[error("gates of node {node}: {condition:?} is named twice (gates = {gates:?})")]
    Twice {
        node: String,
        condition: String,
        gates: String,
    },
    #[error(
        "gates of node {node}: condition {condition:?} cannot name the taint {GATE_TAINT}{condition} \
         (at most 58 of A-Z a-z 0-9 - _ ., alphanumeric at the end)"
    )]
    NoTaintKey { node: String, condition: String },
}

impl From<GatesError> for ExecError {
    /// The same param fails the same way every time.
    fn from(e: GatesError) -> Self {
        ExecError::Permanent(e.to_string())
    }
}

/// Now, as a Node condition's time (RFC 3339, whole seconds, UTC).
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Timestamp::from_secs(secs).to_string()
}

/// A pod to evict.
#[derive(Debug)]
struct Target {
    namespace: String,
    name: String,
    uid: Option<String>,
    /// Why the last eviction was refused (429).
    refused: Option<String>,
}

/// What a drain does with one pod.
enum Plan {
    /// DaemonSet or mirror pod: evicting it would not take it off the node.
    Skip,
    /// Succeeded or Failed: nothing runs any more.
    Finished,
    Evict(Target),
}

impl Target {
    fn of(pod: &Pod) -> Plan {
        let meta = &pod.metadata;
        let mirror = meta
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(MIRROR));
        let daemon = meta.owner_references.as_ref().is_some_and(|owners| {
            owners
                .iter()
                .any(|o| o.kind == "DaemonSet" && o.controller == Some(true))
        });
        if mirror || daemon {
            return Plan::Skip;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            return Plan::Finished;
        }
        Plan::Evict(Target {
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone(),
            refused: None,
        })
    }

    fn show(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A failed drain's reason: which pods stayed and why.
fn would_not_leave(
    node: &str,
    timeout: Duration,
    refused: &[Target],
    leaving: &[Target],
) -> ExecError {
    let count = refused.len() + leaving.len();
    let mut named: Vec<String> = refused
        .iter()
        .map(|t| {
            let why = t.refused.as_deref().unwrap_or("not evicted yet");
            format!("{} (eviction refused: {why})", t.show())
        })
        .chain(
            leaving
                .iter()
                .map(|t| format!("{} (evicted, still on the node)", t.show())),
        )
        .take(NAMED_PODS)
        .collect();
    if count > NAMED_PODS {
        named.push(format!("and {} more", count - NAMED_PODS));
    }
    ExecError::Transient(format!(
        "drain of {node} timed out after {timeout}: {count} {} would not leave: {}",
        plural(count),
        named.join(", ")
    ))
}

/// A fault name as a taint value, which the API server insists is a valid
/// label value (at most 63 of `A-Z a-z 0-9 - _ .`, alphanumeric at both
/// ends): anything else would fail every cordon of that fault.
fn taint_value(fault: &str) -> String {
    let kept: String = fault
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    kept.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        "pod"
    } else {
        "pods"
    }
}

fn changing(node: &str) -> ExecError {
    ExecError::Transient(format!(
        "node {node} changed between every read and patch ({CONFLICT_RETRIES} conflicts): not patched"
    ))
}

/// Why a call to the API server did not succeed.
#[derive(Debug, thiserror::Error)]
enum CallError {
    /// The API server answered with an error status.
    #[error(
        "{what}: API server answered {code}{}: {}",
        show_reason(reason),
        clip(message, 300)
    )]
    Status {
        what: String,
        code: u16,
        reason: String,
        message: String,
    },
    /// No answer, or one that made no sense.
    #[error("{what}: no usable answer from the API server at {server}: {why}")]
    Transport {
        what: String,
        server: String,
        why: String,
    },
    /// The request could not be built (e.g. a node name that is no name).
    #[error("{what}: {why}")]
    Request { what: String, why: String },
}

impl CallError {
    /// The status the API server answered with.
    fn code(&self) -> Option<u16> {
        match self {
            CallError::Status { code, .. } => Some(*code),
            CallError::Transport { .. } | CallError::Request { .. } => None,
        }
    }

    /// The server's message (or the whole error).
    fn message(&self) -> String {
        match self {
            CallError::Status { message, .. } => clip(message, 300),
            other => other.to_string(),
        }
    }
}

impl CallError {
    /// Busy or unreachable API servers (429, 5xx, no answer) may answer
    /// later; any other refusal is final.
    fn transient(&self) -> bool {
        match self {
            CallError::Status { code, .. } => *code == 429 || *code >= 500,
            CallError::Transport { .. } => true,
            CallError::Request { .. } => false,
        }
    }

    /// The job's failure when this call came after `done` was.
    fn after(self, done: &str) -> ExecError {
        let message = format!("{done}; then {self}");
        if self.transient() {
            ExecError::Transient(message)
        } else {
            ExecError::Permanent(message)
        }
    }
}

impl From<CallError> for ExecError {
    /// See [`CallError::transient`].
    fn from(e: CallError) -> Self {
        if e.transient() {
            ExecError::Transient(e.to_string())
        } else {
            ExecError::Permanent(e.to_string())
        }
    }
}

fn show_reason(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(" ({reason})")
    }
}

/// A kube error and its innermost cause, once.
fn describe(e: &kube::Error) -> String {
    let outer = e.to_string();
    let mut inner: &dyn std::error::Error = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    let inner = inner.to_string();
    if outer.contains(&inner) {
        outer
    } else {
        format!("{outer}: {inner}")
    }
}

/// At most `max` characters of a text.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

/// Waits for `future` until `deadline`: `None` when the deadline came first.
async fn within<T>(deadline: Instant, future: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout_at(deadline, future).await.ok()
}

fn std_duration(d: Duration) -> std::time::Duration {
    std::time::Duration::from_millis(d.0.max(0) as u64)
}

/// The API server's node list as a directory of names (`[identity]
/// kubernetes = true`): each node's InternalIP, ExternalIP and Hostname
/// addresses are aliases of its name. Read-only: built in dry-run too.
pub struct NodeDirectory {
    client: Client,
    server: String,
}

impl NodeDirectory {
    /// A client as the `kubernetes` executor's `config` says (kubeconfig,
    /// context; default: in-cluster, then `$KUBECONFIG` or `~/.kube/config`).
    pub async fn new(config: &Config) -> Result<NodeDirectory, ConfigError> {
        let (client, server) = connect("identity.kubernetes", config).await?;
        Ok(NodeDirectory { client, server })
    }

    /// The API server it asks.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// (alias, node name) for every address of every node, in list order;
    /// the error names the server.
    pub async fn aliases(&self) -> Result<Vec<(String, String)>, String> {
        let api: Api<Node> = Api::all(self.client.clone());
        let mut out = Vec::new();
        let mut params = ListParams::default().limit(500);
        loop {
            let page = api
                .list(&params)
                .await
                .map_err(|e| format!("listing nodes on {}: {e}", self.server))?;
            for node in &page.items {
                let Some(name) = node.metadata.name.as_deref() else {
                    continue;
                };
                let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref());
                for a in addresses.into_iter().flatten() {
                    let kind = a.type_.as_str();
                    if matches!(kind, "InternalIP" | "ExternalIP" | "Hostname") && a.address != name
                    {
                        out.push((a.address.clone(), name.to_string()));
                    }
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(out),
            }
        }
    }
}

/// Waits between rounds of evictions refused by a disruption budget (429)
/// and checks of pods still leaving: 200 ms doubling up to 2 s.
const EVICTION_RETRY: Backoff = Backoff::new(Duration(200), Duration(2_000));

/// A client as `config` says, and the server it talks to (for messages);
/// errors name `what` (the action, or the setting) and the kubeconfig.
async fn connect(what: &str, config: &Config) -> Result<(Client, String), ConfigError> {
    let client_config = client_config(what, config).await?;
    let uri = &client_config.cluster_url;
    let server = format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("https"),
        uri.host().unwrap_or("?"),
        uri.port().map(|p| format!(":{p}")).unwrap_or_default()
    );
    let client = Client::try_from(client_config)
        .map_err(|e| ConfigError::new(what, format!("cannot build a client for {server}: {e}")))?;
    Ok((client, server))
}

/// The client configuration `config` asks for; errors name the kubeconfig.
async fn client_config(action: &str, config: &Config) -> Result<kube::Config, ConfigError> {
    let options = KubeConfigOptions {
        context: config.context.clone(),
        ..KubeConfigOptions::default()
    };
    if let Some(path) = &config.kubeconfig {
        let home = std::env::var_os("HOME").filter(|h| !h.is_empty());
        let path = expand_home(path, home.as_deref().map(Path::new)).ok_or_else(|| {
            ConfigError::new(
                action,
                format!("kubeconfig: {path:?} needs $HOME, which is not set"),
            )
        })?;
        let shown = path.display().to_string();
        let file = Kubeconfig::read_from(&path).map_err(|e| {
            ConfigError::new(
                action,
                format!("kubeconfig: {}", kubeconfig_problem(&shown, e)),
            )
        })?;
        return kube::Config::from_custom_kubeconfig(file, &options)
            .await
            .map_err(|e| {
                ConfigError::new(
                    action,
                    format!("kubeconfig: {}", kubeconfig_problem(&shown, e)),
                )
            });
    }
    let default = "$KUBECONFIG or ~/.kube/config";
    if config.context.is_none() {
        match kube::Config::incluster() {
            Ok(c) => return Ok(c),
            Err(in_cluster) => {
                return kube::Config::from_kubeconfig(&options).await.map_err(|e| {
                    ConfigError::new(
                        action,
                        format!(
                            "kubeconfig: not set, not in a cluster ({in_cluster}), and {}",
                            kubeconfig_problem(default, e)
                        ),
                    )
                })
            }
        }
    }
    // A context names an entry of a kubeconfig: the service account has none.
    kube::Config::from_kubeconfig(&options).await.map_err(|e| {
        ConfigError::new(
            action,
            format!("kubeconfig: {}", kubeconfig_problem(default, e)),
        )
    })
}

/// What is wrong with the kubeconfig at `path`. YAML errors give only their
/// place: their text may quote a value, and values there are credentials.
fn kubeconfig_problem(path: &str, e: KubeconfigError) -> String {
    match e {
        KubeconfigError::ReadConfig(io, _) => format!("cannot read {path}: {io}"),
        KubeconfigError::Parse(yaml) | KubeconfigError::InvalidStructure(yaml) => {
            match yaml.location() {
                Some(at) => format!(
                    "{path} is not a valid kubeconfig (line {}, column {})",
                    at.line(),
                    at.column()
                ),
                None => format!("{path} is not a valid kubeconfig"),
            }
        }
        KubeconfigError::LoadContext(context) => {
            format!("{path} has no context {context:?}")
        }
        other => format!("{path}: {other}"),
    }
}

/// `~` and `~/...` under the home directory `home` (`None`: not known).
fn expand_home(path: &str, home: Option<&Path>) -> Option<PathBuf> {
    let rest = match path.strip_prefix('~') {
        Some("") => "",
        Some(rest) if rest.starts_with('/') => &rest[1..],
        _ => return Some(PathBuf::from(path)),
    };
    Some(home?.join(rest))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::{Arc, Mutex};

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
    use axum::response::{IntoResponse, Response};
    use remedy_engine::{Decision, Outcome, Timestamp};

    use super::*;
    use crate::executors::testing::{breaker_guards, job, run_jobs, Fleet};
    use crate::executors::{settings, Executors};

    /// The bearer token of the test kubeconfig: it must never show up.
    const TOKEN: &str = "sekret-token-4711";

    /// One request the fake API server received.
    #[derive(Clone, Debug)]
    struct Seen {
        method: String,
        path: String,
        query: Option<String>,
        content_type: Option<String>,
        body: Value,
    }

    impl Seen {
        /// `METHOD /path?query`.
        fn line(&self) -> String {
            match &self.query {
                Some(q) => format!("{} {}?{q}", self.method, self.path),
                None => format!("{} {}", self.method, self.path),
            }
        }
    }

    /// Answers a request, given every request before it.
    type Answer = dyn Fn(&Seen, &[Seen]) -> (u16, Value) + Send + Sync;

    struct Recorder {
        seen: Mutex<Vec<Seen>>,
        answer: Box<Answer>,
    }

    /// A stand-in API server on 127.0.0.1 and a kubeconfig pointing at it.
    struct FakeApi {
        recorder: Arc<Recorder>,
        kubeconfig: PathBuf,
        _dir: tempfile::TempDir,
    }

    async fn record(
        State(recorder): State<Arc<Recorder>>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let seen = Seen {
            method: method.to_string(),
            path: uri.path().to_string(),
            // As the server reads it: kube's client leaves an empty
            // parameter in front (`?&fieldManager=...`).
            query: uri.query().and_then(|q| {
                let params: Vec<&str> = q.split('&').filter(|p| !p.is_empty()).collect();
                (!params.is_empty()).then(|| params.join("&"))
            }),
            content_type: headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        };
        let (code, answer) = {
            let mut seen_so_far = recorder.seen.lock().unwrap();
            let answer = (recorder.answer)(&seen, &seen_so_far);
            seen_so_far.push(seen);
            answer
        };
        (
            StatusCode::from_u16(code).unwrap(),
            [(header::CONTENT_TYPE, "application/json")],
            answer.to_string(),
        )
            .into_response()
    }

    impl FakeApi {
        async fn start(
            answer: impl Fn(&Seen, &[Seen]) -> (u16, Value) + Send + Sync + 'static,
        ) -> Self {
            let recorder = Arc::new(Recorder {
                seen: Mutex::new(Vec::new()),
                answer: Box::new(answer),
            });
            let app = axum::Router::new()
                .fallback(record)
                .with_state(recorder.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            tokio::spawn(async move { axum::serve(listener, app).await });
            let dir = tempfile::tempdir().unwrap();
            let kubeconfig = dir.path().join("kubeconfig");
            std::fs::write(
                &kubeconfig,
                format!(
                    "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
                     clusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{port}\n\
                     contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: remedy\n\
                     users:\n- name: remedy\n  user:\n    token: {TOKEN}\n"
                ),
            )
            .unwrap();
            FakeApi {
                recorder,
                kubeconfig,
                _dir: dir,
            }
        }

        /// The executor of `[actions.ACTION]` with these keys and our kubeconfig.
        async fn executor(&self, action: &str, keys: &str) -> Kubernetes {
            let mut table: toml::Table = keys.parse().unwrap();
            table.insert(
                "kubeconfig".into(),
                self.kubeconfig.display().to_string().into(),
            );
            let op = op_of(action, &mut table);
            Kubernetes::new(action, &op, settings(action, &table).unwrap())
                .await
                .unwrap()
        }

        fn seen(&self) -> Vec<Seen> {
            self.recorder.seen.lock().unwrap().clone()
        }

        fn lines(&self) -> Vec<String> {
            self.seen().iter().map(Seen::line).collect()
        }
    }

    /// Runs `action` on `node` the way the service does (within the timeout).
    async fn run(executor: Kubernetes, action: &str, node: &str) -> Result<String, String> {
        let executor: Arc<dyn Executor> = Arc::new(executor);
        Executors::from_map(BTreeMap::from([(action.to_string(), executor)]))
            .run(&job(node, action))
            .await
            .map_err(|e| e.to_string())
    }

    fn node(unschedulable: bool, annotations: Value, taints: Value) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": { "name": "node-7", "resourceVersion": "4711", "annotations": annotations },
            "spec": { "unschedulable": unschedulable, "taints": taints },
        })
    }

    fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
        let body = json!({
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": if code < 300 { "Success" } else { "Failure" },
            "reason": reason,
            "message": message,
            "code": code,
        });
        (code, body)
    }

    fn gpu_taint() -> Value {
        json!({ "key": "example.com/gpu", "value": "a100", "effect": "NoSchedule" })
    }

    fn our_taint() -> Value {
        json!({ "key": TAINT, "value": "memory_failure", "effect": "NoSchedule" })
    }

    /// The annotations remedy leaves on a node it cordoned for `action`.
    fn marked(action: &str) -> Value {
        json!({
            CORDONED_BY: job("node-7", action).id,
            FAULT: "memory_failure",
            REASON: "UE on node-7",
            "team": "batch",
        })
    }

    const GET_NODE: &str = "GET /api/v1/nodes/node-7";
    const PATCH_NODE: &str = "PATCH /api/v1/nodes/node-7?fieldManager=remedy";
    const LIST_PODS: &str = "GET /api/v1/pods?fieldSelector=spec.nodeName%3Dnode-7";

    #[tokio::test]
    async fn cordon_reads_the_node_then_patches_taint_and_annotations_keeping_its_taints() {
        let api = FakeApi::start(|req, _| match req.method.as_str() {
            "GET" => (
                200,
                node(false, json!({ "team": "batch" }), json!([gpu_taint()])),
            ),
            _ => (200, node(true, json!({}), json!([]))),
        })
        .await;
        let r = run(api.executor("cordon", "").await, "cordon", "node-7").await;
        assert_eq!(r, Ok(format!("cordoned node-7 (taint {TAINT})")));
        assert_eq!(api.lines(), [GET_NODE, PATCH_NODE]);
        let patch = &api.seen()[1];
        assert_eq!(
            patch.content_type.as_deref(),
            Some("application/merge-patch+json")
        );
        assert_eq!(
            patch.body,
            json!({
                "metadata": {
                    "resourceVersion": "4711",
                    "annotations": {
                        CORDONED_BY: job("node-7", "cordon").id,
                        FAULT: "memory_failure",
                        REASON: "UE on node-7",
                    },
                },
                "spec": { "unschedulable": true, "taints": [gpu_taint(), our_taint()] },
            })
        );
    }

    #[tokio::test]
    async fn a_node_changed_between_read_and_patch_is_read_and_patched_again() {
        let api = FakeApi::start(|req, before| match req.method.as_str() {
            "GET" => (200, node(false, json!({}), json!([]))),
            _ if before.iter().all(|r| r.method != "PATCH") => status(
                409,
                "Conflict",
                "the object has been modified; please apply your changes to the latest version",
            ),
            _ => (200, node(true, json!({}), json!([]))),
        })
        .await;
        let r = run(api.executor("cordon", "").await, "cordon", "node-7").await;
        assert_eq!(r, Ok(format!("cordoned node-7 (taint {TAINT})")));
        assert_eq!(api.lines(), [GET_NODE, PATCH_NODE, GET_NODE, PATCH_NODE]);
    }

    #[tokio::test]
    async fn a_retried_cordon_finds_its_work_done_and_changes_nothing() {
        let api = FakeApi::start(|_, _| {
            (
                200,
                node(true, marked("cordon"), json!([gpu_taint(), our_taint()])),
            )
        })
        .await;
        let r = run(api.executor("cordon", "").await, "cordon", "node-7").await;
        assert_eq!(r, Ok("node-7 already cordoned by remedy".to_string()));
        assert_eq!(api.lines(), [GET_NODE]);
    }

    #[tokio::test]
    async fn a_node_an_operator_cordoned_is_never_marked_nor_uncordoned() {
        let api =
            FakeApi::start(|_, _| (200, node(true, json!({ "team": "batch" }), json!([])))).await;
        let r = run(api.executor("cordon", "").await, "cordon", "node-7").await;
        assert_eq!(
            r,
            Ok("node-7 already cordoned by an operator: left as it is, remedy will not uncordon it"
                .to_string())
        );
        let r = run(api.executor("uncordon", "").await, "uncordon", "node-7").await;
        assert_eq!(
            r,
            Ok("node-7 was cordoned by an operator, not by remedy: left cordoned".to_string())
        );
        assert_eq!(api.lines(), [GET_NODE, GET_NODE], "no PATCH");
    }

    #[tokio::test]
    async fn uncordon_undoes_exactly_what_remedy_did() {
        let api = FakeApi::start(|req, _| match req.method.as_str() {
            "GET" => (
                200,
                node(true, marked("cordon"), json!([gpu_taint(), our_taint()])),
            ),
            _ => (200, node(false, json!({}), json!([gpu_taint()]))),
        })
        .await;
        let r = run(api.executor("uncordon", "").await, "uncordon", "node-7").await;
        assert_eq!(r, Ok(format!("uncordoned node-7 (taint {TAINT} removed)")));
        assert_eq!(api.lines(), [GET_NODE, PATCH_NODE]);
        let patch = &api.seen()[1];
        assert_eq!(
            patch.content_type.as_deref(),
            Some("application/merge-patch+json")
        );
        assert_eq!(
            patch.body,
            json!({
                "metadata": {
                    "resourceVersion": "4711",
                    "annotations": { CORDONED_BY: null, FAULT: null, REASON: null },
                },
                "spec": { "unschedulable": false, "taints": [gpu_taint()] },
            })
        );
    }

    #[tokio::test]
    async fn uncordon_of_a_schedulable_node_sends_no_patch() {
        let api = FakeApi::start(|_, _| (200, node(false, json!({}), json!([gpu_taint()])))).await;
        let r = run(api.executor("uncordon", "").await, "uncordon", "node-7").await;
        assert_eq!(r, Ok("node-7 already schedulable".to_string()));
        assert_eq!(api.lines(), [GET_NODE]);
    }

    fn pod(name: &str, owner: Option<&str>, phase: &str) -> Value {
        let owners: Vec<Value> = owner
            .map(|kind| {
                json!({
                    "apiVersion": "apps/v1", "kind": kind, "name": format!("{name}-owner"),
                    "uid": format!("uid-{name}-owner"), "controller": true,
                })
            })
            .into_iter()
            .collect();
        json!({
            "metadata": {
                "name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                "ownerReferences": owners,
            },
            "spec": { "nodeName": "node-7", "containers": [{ "name": "main", "image": "main" }] },
            "status": { "phase": phase },
        })
    }

    fn pod_list(pods: Vec<Value>) -> (u16, Value) {
        let list = json!({
            "apiVersion": "v1", "kind": "PodList", "metadata": { "resourceVersion": "99" },
            "items": pods,
        });
        (200, list)
    }

    /// How many evictions of pod `name` were asked for before.
    fn evictions(before: &[Seen], name: &str) -> usize {
        let path = format!("/api/v1/namespaces/shop/pods/{name}/eviction");
        before.iter().filter(|r| r.path == path).count()
    }

    fn eviction_of(name: &str) -> String {
        format!("POST /api/v1/namespaces/shop/pods/{name}/eviction")
    }

    const PDB: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

    #[tokio::test]
    async fn drain_evicts_what_can_leave_retries_a_budget_and_waits_for_the_pods_to_go() {
        // web-1 leaves at once; db-0 is held twice by its budget; gone-1 was
        // already gone (404); the DaemonSet pod, the mirror pod and the
        // finished job stay where they are.
        let pods = move || {
            let mut mirror = pod("kube-proxy-node-7", Some("Node"), "Running");
            mirror["metadata"]["annotations"] = json!({ MIRROR: "abc" });
            // Each pod with the eviction that lets it go.
            [
                (pod("web-1", Some("ReplicaSet"), "Running"), 1),
                (pod("db-0", Some("StatefulSet"), "Running"), 3),
                (pod("gone-1", None, "Running"), 1),
                (pod("agent-x", Some("DaemonSet"), "Running"), usize::MAX),
                (mirror, usize::MAX),
                (pod("job-1", Some("Job"), "Succeeded"), usize::MAX),
            ]
        };
        let api = FakeApi::start(move |req, before| {
            let pod_name = req.path.strip_prefix("/api/v1/namespaces/shop/pods/");
            match (req.method.as_str(), req.path.as_str()) {
                ("GET", "/api/v1/nodes/node-7") => (200, node(false, json!({}), json!([]))),
                ("PATCH", _) => (200, node(true, json!({}), json!([our_taint()]))),
                ("GET", "/api/v1/pods") => pod_list(pods().into_iter().map(|(p, _)| p).collect()),
                ("GET", _) => {
                    let name = pod_name.unwrap();
                    match pods()
                        .into_iter()
                        .find(|(p, _)| p["metadata"]["name"] == name)
                    {
                        Some((p, leaves_after)) if evictions(before, name) < leaves_after => {
                            (200, p)
                        }
                        _ => status(404, "NotFound", &format!("pods {name:?} not found")),
                    }
                }
                ("POST", path) if path.ends_with("/gone-1/eviction") => {
                    status(404, "NotFound", "pods \"gone-1\" not found")
                }
                ("POST", path)
                    if path.ends_with("/db-0/eviction") && evictions(before, "db-0") < 2 =>
                {
                    status(429, "TooManyRequests", PDB)
                }
                ("POST", _) => status(201, "", ""),
                _ => status(405, "MethodNotAllowed", "not here"),
            }
        })
        .await;
        let drain = api
            .executor("drain", "grace_period = 30\ntimeout = \"20s\"")
            .await;
        let r = run(drain, "drain", "node-7").await;
        assert_eq!(
            r,
            Ok(
                "drained node-7: 3 pods evicted, 2 skipped (DaemonSet/mirror), 1 already finished"
                    .to_string()
            )
        );
        assert_eq!(
            api.lines(),
            [
                GET_NODE.to_string(),
                PATCH_NODE.into(),
                LIST_PODS.into(),
                eviction_of("web-1"),
                eviction_of("db-0"),
                eviction_of("gone-1"),
                "GET /api/v1/namespaces/shop/pods/web-1".into(),
                eviction_of("db-0"),
                eviction_of("db-0"),
                "GET /api/v1/namespaces/shop/pods/db-0".into(),
            ]
        );
        let seen = api.seen();
        assert_eq!(seen[3].content_type.as_deref(), Some("application/json"));
        assert_eq!(
            seen[3].body,
            json!({
                "apiVersion": "policy/v1",
                "kind": "Eviction",
                "metadata": { "name": "web-1", "namespace": "shop" },
                "deleteOptions": { "gracePeriodSeconds": 30 },
            })
        );
        assert_eq!(
            seen[1].body["spec"]["unschedulable"], true,
            "cordoned first"
        );
    }

    #[tokio::test]
    async fn a_drain_fails_in_time_naming_the_pods_that_would_not_leave() {
        let api = FakeApi::start(|req, _| match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/api/v1/nodes/node-7") => {
                (200, node(true, marked("drain"), json!([our_taint()])))
            }
            ("GET", "/api/v1/pods") => pod_list(vec![
                pod("guarded", Some("ReplicaSet"), "Running"),
                pod("stuck", Some("ReplicaSet"), "Running"),
            ]),
            ("GET", "/api/v1/namespaces/shop/pods/stuck") => {
                (200, pod("stuck", Some("ReplicaSet"), "Running"))
            }
            ("POST", path) if path.ends_with("/guarded/eviction") => {
                status(429, "TooManyRequests", PDB)
            }
            ("POST", _) => status(201, "", ""),
            _ => status(404, "NotFound", "no such thing"),
        })
        .await;
        let drain = api.executor("drain", "timeout = \"1s\"").await;
        let started = std::time::Instant::now();
        let r = run(drain, "drain", "node-7").await;
        let took = started.elapsed();
        assert_eq!(
            r,
            Err(format!(
                "drain of node-7 timed out after 1s: 2 pods would not leave: \
                 shop/guarded (eviction refused: {PDB}), shop/stuck (evicted, still on the node)"
            ))
        );
        assert!(
            took >= std::time::Duration::from_secs(1) && took < std::time::Duration::from_secs(3),
            "{took:?}"
        );
        let lines = api.lines();
        let count = |line: &str| lines.iter().filter(|l| *l == line).count();
        assert_eq!(
            count(&eviction_of("stuck")),
            1,
            "evicted once, then watched"
        );
        assert!(
            count("GET /api/v1/namespaces/shop/pods/stuck") >= 2,
            "{lines:?}"
        );
        assert!(count(&eviction_of("guarded")) >= 3, "{lines:?}");
        assert!(
            !lines.iter().any(|l| l.starts_with("PATCH")),
            "already cordoned"
        );
    }

    #[tokio::test]
    async fn a_server_error_on_eviction_fails_the_drain_at_once() {
        let api = FakeApi::start(|req, _| match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/api/v1/nodes/node-7") => {
                (200, node(true, marked("drain"), json!([our_taint()])))
            }
            ("GET", "/api/v1/pods") => pod_list(vec![pod("web-1", Some("ReplicaSet"), "Running")]),
            _ => status(
                500,
                "InternalError",
                "This pod has more than one PodDisruptionBudget",
            ),
        })
        .await;
        let r = run(api.executor("drain", "").await, "drain", "node-7").await;
        assert_eq!(
            r,
            Err(
                "POST eviction of shop/web-1: API server answered 500 (InternalError): \
                 This pod has more than one PodDisruptionBudget"
                    .to_string()
            )
        );
        assert_eq!(api.lines().len(), 3);
    }

    #[tokio::test]
    async fn server_errors_fail_cordons_and_open_the_breaker() {
        let api =
            FakeApi::start(|_, _| status(500, "InternalError", "etcdserver: request timed out"))
                .await;
        let cordon: Arc<dyn Executor> = Arc::new(api.executor("cordon", "").await);
        let executors = Executors::from_map(BTreeMap::from([("cordon".to_string(), cordon)]));
        let mut guards = breaker_guards("cordon", "kubernetes");
        let at = |secs: i64| Timestamp(job("a", "cordon").at.0 + secs * 1000);
        let mut out: Vec<Decision> = Vec::new();
        for (i, node) in ["node-a", "node-b"].into_iter().enumerate() {
            guards.submit(job(node, "cordon").intent, at(i as i64), &Fleet, &mut out);
            run_jobs(&mut guards, &executors, at(i as i64), &mut out).await;
        }
        guards.submit(job("node-c", "cordon").intent, at(2), &Fleet, &mut out);
        assert!(guards.take_jobs().is_empty());
        let outcomes: Vec<_> = out.iter().map(|d| (d.node.as_str(), d.outcome)).collect();
        assert_eq!(
            outcomes,
            [
                ("node-a", Some(Outcome::Failed)),
                ("node-b", Some(Outcome::Failed)),
                ("node-c", Some(Outcome::CircuitOpen)),
            ]
        );
        assert_eq!(
            out[0].reason.as_deref(),
            Some("GET node node-a: API server answered 500 (InternalError): etcdserver: request timed out")
        );
        assert!(out
            .iter()
            .all(|d| !d.reason.as_deref().unwrap_or("").contains(TOKEN)));
        assert_eq!(
            api.lines(),
            ["GET /api/v1/nodes/node-a", "GET /api/v1/nodes/node-b"],
            "the open breaker keeps node-c's cordon from the API server"
        );
    }

    // Gates (contract 10): the `gates` param written as Node conditions
    // and `remedy.io/gate-*` taints.

    const PATCH_STATUS: &str = "PATCH /api/v1/nodes/node-7/status?fieldManager=remedy";
    /// When the conditions of the test nodes last changed.
    const BEFORE: &str = "2026-11-20T10:00:00Z";

    /// Runs `job` the way the service does (within the timeout).
    async fn run_job(executor: Kubernetes, job: &Job) -> Result<String, ExecError> {
        let executor: Arc<dyn Executor> = Arc::new(executor);
        Executors::from_map(BTreeMap::from([(job.intent.action.clone(), executor)]))
            .run(job)
            .await
    }

    /// `action` of node-7 for a memory failure, on a node whose class has
    /// gates: `gates` as the engine puts it.
    fn gated(action: &str, gates: &str) -> Job {
        let mut j = job("node-7", action);
        j.intent.params.insert("gates".into(), gates.into());
        j
    }

    fn gate_taint(condition: &str) -> Value {
        json!({ "key": format!("{GATE_TAINT}{condition}"), "effect": "NoSchedule" })
    }

    /// A condition as the kubelet (or remedy) left it at [`BEFORE`].
    fn condition(type_: &str, status: &str) -> Value {
        json!({
            "type": type_, "status": status, "reason": "Seen", "message": "",
            "lastHeartbeatTime": BEFORE, "lastTransitionTime": BEFORE,
        })
    }

    fn with_conditions(mut node: Value, conditions: Value) -> Value {
        node["status"] = json!({ "conditions": conditions });
        node
    }

    use remedy_testkit::merge_patch as merge;

    fn bump(node: &mut Value) {
        let version: u64 = node["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        node["metadata"]["resourceVersion"] = json!((version + 1).to_string());
    }

    /// An API server keeping node-7: GET answers it; a merge PATCH changes
    /// it unless its resourceVersion is not the node's (409); a strategic
    /// merge PATCH of `status` merges `status.conditions` by type. Each
    /// change is a new resourceVersion.
    fn keeping(node: Value) -> (Arc<Mutex<Value>>, impl Fn(&Seen) -> (u16, Value)) {
        let kept = Arc::new(Mutex::new(node));
        let state = kept.clone();
        let answer = move |req: &Seen| {
            let mut node = state.lock().unwrap();
            match (req.method.as_str(), req.path.as_str()) {
                ("GET", "/api/v1/nodes/node-7") => (200, node.clone()),
                ("PATCH", "/api/v1/nodes/node-7") => {
                    assert_eq!(
                        req.content_type.as_deref(),
                        Some("application/merge-patch+json")
                    );
                    let wanted = &req.body["metadata"]["resourceVersion"];
                    if !wanted.is_null() && *wanted != node["metadata"]["resourceVersion"] {
                        return status(
                            409,
                            "Conflict",
                            "the object has been modified; please apply your changes to the latest version",
                        );
                    }
                    let mut patch = req.body.clone();
                    if let Some(meta) = patch["metadata"].as_object_mut() {
                        meta.remove("resourceVersion");
                    }
                    merge(&mut node, &patch);
                    bump(&mut node);
                    (200, node.clone())
                }
                ("PATCH", "/api/v1/nodes/node-7/status") => {
                    assert_eq!(
                        req.content_type.as_deref(),
                        Some("application/strategic-merge-patch+json")
                    );
                    if !node["status"]["conditions"].is_array() {
                        node["status"]["conditions"] = json!([]);
                    }
                    let list = node["status"]["conditions"].as_array_mut().unwrap();
                    for c in req.body["status"]["conditions"].as_array().unwrap() {
                        match list.iter_mut().find(|old| old["type"] == c["type"]) {
                            Some(old) => merge(old, c),
                            None => list.push(c.clone()),
                        }
                    }
                    bump(&mut node);
                    (200, node.clone())
                }
                _ => status(404, "NotFound", "not here"),
            }
        };
        (kept, answer)
    }

    /// A fake API server keeping `node` (see [`keeping`]).
    async fn api_keeping(node: Value) -> (FakeApi, Arc<Mutex<Value>>) {
        let (kept, answer) = keeping(node);
        (FakeApi::start(move |req, _| answer(req)).await, kept)
    }

    /// (resource, verb) of a request of the executor, as RBAC sees it.
    fn rbac(seen: &Seen) -> (String, &'static str) {
        let rest = seen.path.strip_prefix("/api/v1/").unwrap();
        let parts: Vec<&str> = rest.split('/').collect();
        let resource = match parts.as_slice() {
            ["nodes", _, sub] => format!("nodes/{sub}"),
            ["nodes", ..] => "nodes".into(),
            ["pods"] => "pods".into(),
            ["namespaces", _, "pods", _, sub] => format!("pods/{sub}"),
            ["namespaces", _, "pods", _] => "pods".into(),
            other => panic!("not a call of the executor: {other:?}"),
        };
        let verb = match (seen.method.as_str(), parts.len()) {
            ("GET", 1) => "list",
            ("GET", _) => "get",
            ("PATCH", _) => "patch",
            ("POST", _) => "create",
            (m, _) => panic!("not a call of the executor: {m}"),
        };
        (resource, verb)
    }

    /// Every request was one the executor says it makes (what rbac.yaml
    /// grants, see tests/deploy.rs).
    fn assert_declared(api: &FakeApi) {
        for seen in api.seen() {
            let (resource, verb) = rbac(&seen);
            assert!(
                API_CALLS.contains(&(resource.as_str(), verb)),
                "{} is {verb} {resource}, not in API_CALLS",
                seen.line()
            );
        }
    }

    /// The status PATCH's heartbeat: one time for every condition, RFC 3339
    /// in whole seconds, between `from` and `to`.
    fn heartbeat(patch: &Value, from: &str, to: &str) -> String {
        let conditions = patch["status"]["conditions"].as_array().unwrap();
        let at = conditions[0]["lastHeartbeatTime"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(Timestamp::parse_rfc3339(&at).is_ok(), "{at}");
        assert!(at.ends_with('Z') && at.len() == 20, "{at}");
        assert!(
            from <= at.as_str() && at.as_str() <= to,
            "{from} <= {at} <= {to}"
        );
        assert!(
            conditions.iter().all(|c| c["lastHeartbeatTime"] == at),
            "{patch}"
        );
        at
    }

    fn gate_condition(condition: &str, state: &str, since: &str, now: &str, why: &str) -> Value {
        let status = match state {
            "true" => "True",
            "false" => "False",
            _ => "Unknown",
        };
        json!({
            "type": format!("remedy.io/{condition}"),
            "status": status,
            "reason": "RemedyGate",
            "message": format!("gate {condition} is {state} ({why})"),
            "lastHeartbeatTime": now,
            "lastTransitionTime": since,
        })
    }

    fn ready_condition(status: &str, reason: &str, message: &str, since: &str, now: &str) -> Value {
        json!({
            "type": "RemedyReady",
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": since,
        })
    }

    #[tokio::test]
    async fn a_gated_cordon_taints_the_gates_not_true_and_writes_their_conditions() {
        let read = with_conditions(
            node(false, json!({ "team": "batch" }), json!([gpu_taint()])),
            json!([
                condition("Ready", "True"),
                condition("remedy.io/KubeletOK", "True"),
                condition("remedy.io/DiskOK", "True"),
            ]),
        );
        let (api, kept) = api_keeping(read).await;
        let from = now_rfc3339();
        let r = run_job(
            api.executor("cordon", "").await,
            &gated("cordon", "KubeletOK=false,DiskOK=true"),
        )
        .await;
        let to = now_rfc3339();
        assert_eq!(
            r,
            Ok(format!(
                "cordoned node-7 (taint {TAINT}); gates KubeletOK=false,DiskOK=true: \
                 RemedyReady False, tainted remedy.io/gate-KubeletOK"
            ))
        );
        assert_eq!(api.lines(), [GET_NODE, PATCH_NODE, PATCH_STATUS]);
        assert_declared(&api);
        let seen = api.seen();
        assert_eq!(
            seen[1].body,
            json!({
                "metadata": {
                    "resourceVersion": "4711",
                    "annotations": {
                        CORDONED_BY: job("node-7", "cordon").id,
                        FAULT: "memory_failure",
                        REASON: "UE on node-7",
                    },
                },
                "spec": {
                    "unschedulable": true,
                    "taints": [gpu_taint(), our_taint(), gate_taint("KubeletOK")],
                },
            })
        );
        let status = &seen[2];
        assert_eq!(
            status.content_type.as_deref(),
            Some("application/strategic-merge-patch+json")
        );
        let now = heartbeat(&status.body, &from, &to);
        let why = "remedy cordon for memory_failure";
        assert_eq!(
            status.body,
            json!({ "status": { "conditions": [
                gate_condition("KubeletOK", "false", &now, &now, why),
                gate_condition("DiskOK", "true", BEFORE, &now, why),
                ready_condition(
                    "False",
                    "GatesNotTrue",
                    &format!("gates not true: KubeletOK (false) ({why})"),
                    &now,
                    &now,
                ),
            ] } })
        );
        // The kubelet's condition stays (conditions merge by type).
        let node = kept.lock().unwrap().clone();
        let types: Vec<&str> = node["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "Ready",
                "remedy.io/KubeletOK",
                "remedy.io/DiskOK",
                "RemedyReady"
            ]
        );
    }

    #[tokio::test]
    async fn the_same_gated_cordon_run_again_leaves_the_same_node() {
        let (api, kept) = api_keeping(node(false, json!({}), json!([gpu_taint()]))).await;
        let cordon = gated("cordon", "KubeletOK=false,DiskOK=unknown");
        let first = run_job(api.executor("cordon", "").await, &cordon).await;
        assert_eq!(
            first,
            Ok(format!(
                "cordoned node-7 (taint {TAINT}); gates KubeletOK=false,DiskOK=unknown: \
                 RemedyReady False, tainted remedy.io/gate-KubeletOK, remedy.io/gate-DiskOK"
            ))
        );
        let after_first = kept.lock().unwrap().clone();
        let second = run_job(api.executor("cordon", "").await, &cordon).await;
        assert_eq!(
            second,
            Ok(
                "node-7 already cordoned by remedy; gates KubeletOK=false,DiskOK=unknown: \
                RemedyReady False"
                    .to_string()
            )
        );
        assert_eq!(
            api.lines(),
            [GET_NODE, PATCH_NODE, PATCH_STATUS, GET_NODE, PATCH_STATUS],
            "the taints are there: no second node PATCH"
        );
        let after_second = kept.lock().unwrap().clone();
        assert_eq!(after_second["spec"], after_first["spec"]);
        assert_eq!(
            after_second["metadata"]["annotations"],
            after_first["metadata"]["annotations"]
        );
        assert_eq!(
            after_second["spec"]["taints"],
            json!([
                gpu_taint(),
                our_taint(),
                gate_taint("KubeletOK"),
                gate_taint("DiskOK")
            ])
        );
        // Only the heartbeats moved: no condition changed its status.
        let transitions = |node: &Value| -> Vec<(Value, Value, Value)> {
            node["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    (
                        c["type"].clone(),
                        c["status"].clone(),
                        c["lastTransitionTime"].clone(),
                    )
                })
                .collect()
        };
        assert_eq!(transitions(&after_second), transitions(&after_first));
        assert_eq!(transitions(&after_first).len(), 3);
    }

    #[tokio::test]
    async fn a_gated_uncordon_with_every_gate_true_removes_every_gate_taint() {
        // gate-NetOK is left from a gate the class no longer has.
        let read = with_conditions(
            node(
                true,
                marked("cordon"),
                json!([
                    gpu_taint(),
                    our_taint(),
                    gate_taint("KubeletOK"),
                    gate_taint("NetOK")
                ]),
            ),
            json!([
                condition("Ready", "True"),
                condition("remedy.io/KubeletOK", "False"),
                condition("remedy.io/DiskOK", "True"),
                condition("RemedyReady", "False"),
            ]),
        );
        let (api, kept) = api_keeping(read).await;
        let from = now_rfc3339();
        let r = run_job(
            api.executor("uncordon", "").await,
            &gated("uncordon", "KubeletOK=true,DiskOK=true"),
        )
        .await;
        let to = now_rfc3339();
        assert_eq!(
            r,
            Ok(format!(
                "uncordoned node-7 (taint {TAINT} removed); gates KubeletOK=true,DiskOK=true: \
                 RemedyReady True, untainted remedy.io/gate-KubeletOK, remedy.io/gate-NetOK"
            ))
        );
        assert_eq!(api.lines(), [GET_NODE, PATCH_NODE, PATCH_STATUS]);
        assert_declared(&api);
        let seen = api.seen();
        assert_eq!(
            seen[1].body,
            json!({
                "metadata": {
                    "resourceVersion": "4711",
                    "annotations": { CORDONED_BY: null, FAULT: null, REASON: null },
                },
                "spec": { "unschedulable": false, "taints": [gpu_taint()] },
            })
        );
        assert_eq!(
            seen[2].content_type.as_deref(),
            Some("application/strategic-merge-patch+json")
        );
        let now = heartbeat(&seen[2].body, &from, &to);
        let why = "remedy uncordon for memory_failure";
        assert_eq!(
            seen[2].body,
            json!({ "status": { "conditions": [
                gate_condition("KubeletOK", "true", &now, &now, why),
                gate_condition("DiskOK", "true", BEFORE, &now, why),
                ready_condition(
                    "True",
                    "GatesTrue",
                    &format!("every gate is true: KubeletOK, DiskOK ({why})"),
                    &now,
                    &now,
                ),
            ] } })
        );
        let node = kept.lock().unwrap().clone();
        assert_eq!(node["spec"]["taints"], json!([gpu_taint()]));
        assert_eq!(node["status"]["conditions"][0], condition("Ready", "True"));
    }

    #[tokio::test]
    async fn a_gated_uncordon_keeps_the_taints_of_gates_still_not_true_and_adds_none() {
        // Not cordoned by remedy (any more): only the gate taints change.
        let read = node(
            false,
            json!({}),
            json!([gate_taint("KubeletOK"), gpu_taint(), gate_taint("DiskOK")]),
        );
        let (api, _) = api_keeping(read).await;
        let r = run_job(
            api.executor("uncordon", "").await,
            &gated("uncordon", "KubeletOK=true,DiskOK=unknown,NetOK=false"),
        )
        .await;
        assert_eq!(
            r,
            Ok(
                "node-7 already schedulable; gates KubeletOK=true,DiskOK=unknown,NetOK=false: \
                RemedyReady False, untainted remedy.io/gate-KubeletOK"
                    .to_string()
            )
        );
        assert_eq!(api.lines(), [GET_NODE, PATCH_NODE, PATCH_STATUS]);
        let seen = api.seen();
        assert_eq!(
            seen[1].body,
            json!({
                "metadata": { "resourceVersion": "4711" },
                "spec": { "taints": [gpu_taint(), gate_taint("DiskOK")] },
            })
        );
        let conditions = seen[2].body["status"]["conditions"].as_array().unwrap();
        let statuses: Vec<(&str, &str)> = conditions
            .iter()
            .map(|c| (c["type"].as_str().unwrap(), c["status"].as_str().unwrap()))
            .collect();
        assert_eq!(
            statuses,
            [
                ("remedy.io/KubeletOK", "True"),
                ("remedy.io/DiskOK", "Unknown"),
                ("remedy.io/NetOK", "False"),
                ("RemedyReady", "False"),
            ]
        );
        assert_eq!(
            conditions[3]["message"],
            "gates not true: DiskOK (unknown), NetOK (false) (remedy uncordon for memory_failure)"
        );
    }

    #[tokio::test]
    async fn gate_taints_follow_the_gates_on_a_node_an_operator_cordoned() {
        let (api, kept) = api_keeping(node(true, json!({}), json!([gpu_taint()]))).await;
        let r = run_job(
            api.executor("cordon", "").await,
            &gated("cordon", "KubeletOK=false"),
        )
        .await;
        assert_eq!(
            r,
            Ok("node-7 already cordoned by an operator: left as it is, remedy will not \
                uncordon it; gates KubeletOK=false: RemedyReady False, tainted remedy.io/gate-KubeletOK"
                .to_string())
        );
        assert_eq!(
            api.seen()[1].body,
            json!({
                "metadata": { "resourceVersion": "4711" },
                "spec": { "taints": [gpu_taint(), gate_taint("KubeletOK")] },
            }),
            "no mark, no remedy.io/unhealthy"
        );
        let r = run_job(
            api.executor("uncordon", "").await,
            &gated("uncordon", "KubeletOK=true"),
        )
        .await;
        assert_eq!(
            r,
            Ok(
                "node-7 was cordoned by an operator, not by remedy: left cordoned; \
                gates KubeletOK=true: RemedyReady True, untainted remedy.io/gate-KubeletOK"
                    .to_string()
            )
        );
        let node = kept.lock().unwrap().clone();
        assert_eq!(
            node["spec"]["unschedulable"], true,
            "the operator's cordon stays"
        );
        assert_eq!(node["spec"]["taints"], json!([gpu_taint()]));
        assert_eq!(
            api.lines(),
            [
                GET_NODE,
                PATCH_NODE,
                PATCH_STATUS,
                GET_NODE,
                PATCH_NODE,
                PATCH_STATUS
            ]
        );
    }

    #[tokio::test]
    async fn jobs_without_gates_send_no_status_patch_and_touch_no_gate_taint() {
        let read = with_conditions(
            node(
                false,
                json!({}),
                json!([gpu_taint(), gate_taint("KubeletOK")]),
            ),
            json!([condition("Ready", "True")]),
        );
        let (api, kept) = api_keeping(read).await;
        let r = run(api.executor("cordon", "").await, "cordon", "node-7").await;
        assert_eq!(r, Ok(format!("cordoned node-7 (taint {TAINT})")));
        let r = run(api.executor("uncordon", "").await, "uncordon", "node-7").await;
        assert_eq!(r, Ok(format!("uncordoned node-7 (taint {TAINT} removed)")));
        assert_eq!(api.lines(), [GET_NODE, PATCH_NODE, GET_NODE, PATCH_NODE]);
        let node = kept.lock().unwrap().clone();
        assert_eq!(
            node["spec"]["taints"],
            json!([gpu_taint(), gate_taint("KubeletOK")])
        );
        assert_eq!(
            node["status"]["conditions"],
            json!([condition("Ready", "True")])
        );
    }

    #[tokio::test]
    async fn a_gated_cordon_of_a_node_changed_in_between_keeps_the_new_taint() {
        let (kept, answer) = keeping(node(false, json!({}), json!([gpu_taint()])));
        let changed = kept.clone();
        let maintenance = json!({ "key": "example.com/maintenance", "effect": "NoSchedule" });
        let added = maintenance.clone();
        let api = FakeApi::start(move |req, before| {
            // Someone taints the node between remedy's first read and patch.
            if req.method == "PATCH" && before.iter().all(|r| r.method != "PATCH") {
                let mut node = changed.lock().unwrap();
                node["spec"]["taints"]
                    .as_array_mut()
                    .unwrap()
                    .push(added.clone());
                bump(&mut node);
            }
            answer(req)
        })
        .await;
        let r = run_job(
            api.executor("cordon", "").await,
            &gated("cordon", "KubeletOK=false"),
        )
        .await;
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(
            api.lines(),
            [GET_NODE, PATCH_NODE, GET_NODE, PATCH_NODE, PATCH_STATUS]
        );
        let seen = api.seen();
        assert_eq!(seen[1].body["metadata"]["resourceVersion"], "4711");
        assert_eq!(seen[3].body["metadata"]["resourceVersion"], "4712");
        assert_eq!(
            seen[3].body["spec"]["taints"],
            json!([
                gpu_taint(),
                maintenance,
                our_taint(),
                gate_taint("KubeletOK")
            ])
        );
        assert_eq!(
            kept.lock().unwrap()["spec"]["taints"],
            seen[3].body["spec"]["taints"]
        );
    }

    #[tokio::test]
    async fn a_gated_drain_writes_the_conditions_after_cordoning_and_before_evicting() {
        let (_, kept_answer) = keeping(node(false, json!({}), json!([])));
        let api =
            FakeApi::start(
                move |req, before| match (req.method.as_str(), req.path.as_str()) {
                    ("GET", "/api/v1/pods") => {
                        pod_list(vec![pod("web-1", Some("ReplicaSet"), "Running")])
                    }
                    ("POST", _) => status(201, "", ""),
                    ("GET", "/api/v1/namespaces/shop/pods/web-1")
                        if evictions(before, "web-1") > 0 =>
                    {
                        status(404, "NotFound", "pods \"web-1\" not found")
                    }
                    _ => kept_answer(req),
                },
            )
            .await;
        let r = run_job(
            api.executor("drain", "").await,
            &gated("drain", "KubeletOK=true,DiskOK=false"),
        )
        .await;
        assert_eq!(
            r,
            Ok("drained node-7: 1 pod evicted, 0 skipped (DaemonSet/mirror); \
                gates KubeletOK=true,DiskOK=false: RemedyReady False, tainted remedy.io/gate-DiskOK"
                .to_string())
        );
        assert_eq!(
            api.lines(),
            [
                GET_NODE.to_string(),
                PATCH_NODE.into(),
                PATCH_STATUS.into(),
                LIST_PODS.into(),
                eviction_of("web-1"),
                "GET /api/v1/namespaces/shop/pods/web-1".into(),
            ]
        );
        // Every call the executor declares for its actions, and nothing else.
        let calls: BTreeSet<(String, &str)> = api.seen().iter().map(rbac).collect();
        let declared: BTreeSet<(String, &str)> = API_CALLS
            .iter()
            .filter(|c| !DIRECTORY_CALLS.contains(c))
            .map(|(r, v)| (r.to_string(), *v))
            .collect();
        assert_eq!(calls, declared);
    }

    #[tokio::test]
    async fn a_refused_status_patch_fails_the_job_saying_the_cordon_was_done() {
        let forbidden = "nodes \"node-7\" is forbidden: User \"system:serviceaccount:remedy:remedy\" \
                         cannot patch resource \"nodes/status\" in API group \"\" at the cluster scope";
        let (_, kept_answer) = keeping(node(false, json!({}), json!([])));
        let api = FakeApi::start(move |req, _| {
            if req.path.ends_with("/status") {
                status(403, "Forbidden", forbidden)
            } else {
                kept_answer(req)
            }
        })
        .await;
        let r = run_job(
            api.executor("cordon", "").await,
            &gated("cordon", "KubeletOK=false"),
        )
        .await;
        assert_eq!(
            r,
            Err(ExecError::Permanent(format!(
                "cordoned node-7 (taint {TAINT}); then PATCH status of node node-7: \
                 API server answered 403 (Forbidden): {forbidden}"
            )))
        );
        assert_eq!(api.lines(), [GET_NODE, PATCH_NODE, PATCH_STATUS]);
    }

    #[tokio::test]
    async fn a_gates_param_that_does_not_parse_fails_the_job_before_any_call() {
        let api = FakeApi::start(|_, _| (200, node(false, json!({}), json!([])))).await;
        let long = "A".repeat(59);
        let cases = [
            (
                "KubeletOK=maybe",
                "\"KubeletOK=maybe\" is not CONDITION=true|false|unknown (gates = \"KubeletOK=maybe\")"
                    .to_string(),
            ),
            (
                "KubeletOK",
                "\"KubeletOK\" is not CONDITION=true|false|unknown (gates = \"KubeletOK\")".into(),
            ),
            (
                "",
                "\"\" is not CONDITION=true|false|unknown (gates = \"\")".into(),
            ),
            (
                "KubeletOK=true,=false",
                "\"=false\" is not CONDITION=true|false|unknown (gates = \"KubeletOK=true,=false\")"
                    .into(),
            ),
            (
                "KubeletOK=true,KubeletOK=false",
                "\"KubeletOK\" is named twice (gates = \"KubeletOK=true,KubeletOK=false\")".into(),
            ),
            (
                "Disk OK=true",
                "condition \"Disk OK\" cannot name the taint remedy.io/gate-Disk OK \
                 (at most 58 of A-Z a-z 0-9 - _ ., alphanumeric at the end)"
                    .into(),
            ),
            (
                &format!("{long}=true"),
                format!(
                    "condition \"{long}\" cannot name the taint remedy.io/gate-{long} \
                     (at most 58 of A-Z a-z 0-9 - _ ., alphanumeric at the end)"
                ),
            ),
        ];
        for (gates, why) in cases {
            for action in ["cordon", "uncordon", "drain"] {
                let r = run_job(api.executor(action, "").await, &gated(action, gates)).await;
                assert_eq!(
                    r,
                    Err(ExecError::Permanent(format!("gates of node node-7: {why}"))),
                    "{action} {gates:?}"
                );
            }
        }
        assert_eq!(api.lines(), Vec::<String>::new(), "no call");
        // 58 characters still name a taint.
        let r = run_job(
            api.executor("uncordon", "").await,
            &gated("uncordon", &format!("{}=true", "A".repeat(58))),
        )
        .await;
        assert!(r.is_ok(), "{r:?}");
    }

    /// `op` of `[actions.ACTION]` (a common key of every action, read
    /// before the executor's own): the action's name when not given.
    fn op_of(action: &str, table: &mut toml::Table) -> String {
        table
            .remove("op")
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_else(|| action.to_string())
    }

    /// The error `new` gives for these `[actions.ACTION]` keys.
    async fn config_error(action: &str, keys: &str) -> String {
        let mut table: toml::Table = keys.parse().unwrap();
        let op = op_of(action, &mut table);
        match settings::<Config>(action, &table) {
            Err(e) => e.to_string(),
            Ok(config) => Kubernetes::new(action, &op, config)
                .await
                .unwrap_err()
                .to_string(),
        }
    }

    #[tokio::test]
    async fn bad_settings_are_config_errors_naming_the_key_or_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope/kubeconfig");
        let at = |extra: &str| format!("kubeconfig = {:?}\n{extra}", missing.display().to_string());

        assert_eq!(
            config_error("restart", &at("")).await,
            "[actions.restart] op: \"restart\" is not an operation of the kubernetes executor; \
             expected cordon, uncordon or drain"
        );
        assert_eq!(
            config_error("cordon", &at("op = \"evict\"")).await,
            "[actions.cordon] op: \"evict\" is not an operation of the kubernetes executor; \
             expected cordon, uncordon or drain"
        );
        assert_eq!(
            config_error("cordon", &at("grace_period = 30")).await,
            "[actions.cordon] grace_period: only a drain evicts pods; remove it or set op = \"drain\""
        );
        let unknown = config_error("cordon", &at("namespace = \"x\"")).await;
        assert!(
            unknown.starts_with("[actions.cordon] unknown field `namespace`"),
            "{unknown}"
        );

        let unreadable = config_error("cordon", &at("")).await;
        assert!(
            unreadable.starts_with(&format!(
                "[actions.cordon] kubeconfig: cannot read {}: ",
                missing.display()
            )),
            "{unreadable}"
        );

        // A kubeconfig that is no kubeconfig: the place, not the secret.
        let broken = dir.path().join("broken");
        std::fs::write(&broken, format!("users: {TOKEN}\n")).unwrap();
        let e = config_error(
            "cordon",
            &format!("kubeconfig = {:?}", broken.display().to_string()),
        )
        .await;
        assert!(
            e.starts_with(&format!(
                "[actions.cordon] kubeconfig: {} is not a valid kubeconfig",
                broken.display()
            )),
            "{e}"
        );
        assert!(!e.contains(TOKEN), "{e}");
    }

    #[tokio::test]
    async fn a_context_the_kubeconfig_lacks_is_a_config_error() {
        let api = FakeApi::start(|_, _| (404, json!({}))).await;
        let keys = format!(
            "kubeconfig = {:?}\ncontext = \"prod\"",
            api.kubeconfig.display().to_string()
        );
        assert_eq!(
            config_error("cordon", &keys).await,
            format!(
                "[actions.cordon] kubeconfig: {} has no context \"prod\"",
                api.kubeconfig.display()
            )
        );
    }

    #[test]
    fn a_taint_value_is_always_a_valid_label_value() {
        assert_eq!(taint_value("memory_failure"), "memory_failure");
        assert_eq!(taint_value("disk failure/sda"), "disk_failure_sda");
        assert_eq!(taint_value("_x."), "x");
        assert_eq!(taint_value(&"a".repeat(80)), "a".repeat(63));
        assert_eq!(taint_value("été"), "t");
    }

    #[test]
    fn a_tilde_is_the_home_directory() {
        let home = Some(Path::new("/home/sre"));
        let expand = |path| expand_home(path, home);
        assert_eq!(
            expand("~/.kube/config"),
            Some("/home/sre/.kube/config".into())
        );
        assert_eq!(expand("~"), Some("/home/sre".into()));
        assert_eq!(expand("/etc/kubeconfig"), Some("/etc/kubeconfig".into()));
        assert_eq!(expand("~other/x"), Some("~other/x".into()));
        assert_eq!(expand_home("~/x", None), None);
        assert_eq!(expand_home("/x", None), Some("/x".into()));
    }
}
