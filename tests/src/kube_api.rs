//! A stand-in for the Kubernetes API server: `GET /api/v1/pods` and
//! `GET /api/v1/namespaces`, each a list (`PodList` / `NamespaceList` with a
//! `resourceVersion`) or, with `watch=true`, a watch stream of newline-delimited
//! `{"type": "ADDED" | "MODIFIED" | "DELETED", "object": …}` from the given
//! `resourceVersion` on — the wire format kube-rs's watcher speaks. Pods honour the
//! field selector `spec.nodeName=`. Objects are `k8s-openapi` types serialised, so
//! the agent reads exactly what a real API server would send.
//!
//! The test can drop every open watch (the watcher must resume) and take the API
//! down (503 to every request, watches closed) and up again. [`pod`] and
//! [`namespace`] build the objects as the kubelet and the API server fill them in.
//!
//! Used by the Kubernetes end-to-end tests and by the benchmark's pod-binding section.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Router,
    body::Body,
    http::{StatusCode, Uri},
    response::Response,
    routing::get,
};
use futures_util::StreamExt as _;
use k8s_openapi::{
    api::core::v1::{Container, ContainerStatus, Namespace, Pod, PodSpec, PodStatus},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde_json::{Value, json};
use tokio::sync::broadcast;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Pod,
    Namespace,
}

#[derive(Clone, Debug)]
enum Ev {
    Object {
        rv: u64,
        kind: Kind,
        typ: &'static str,
        node: Option<String>,
        obj: Value,
    },
    Close,
}

#[derive(Default)]
struct Store {
    rv: u64,
    pods: BTreeMap<String, (Option<String>, Value)>,
    namespaces: BTreeMap<String, Value>,
    log: Vec<Ev>,
}

struct Shared {
    store: Mutex<Store>,
    events: broadcast::Sender<Ev>,
    down: AtomicBool,
}

/// The running stand-in; dropped, it stops.
pub struct KubeApi {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KubeApi {
    pub fn start() -> KubeApi {
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            events: broadcast::channel(4096).0,
            down: AtomicBool::new(false),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let (a, b) = (s.clone(), s.clone());
                let app = Router::new()
                    .route(
                        "/api/v1/pods",
                        get(move |uri: Uri| serve(a.clone(), Kind::Pod, uri)),
                    )
                    .route(
                        "/api/v1/namespaces",
                        get(move |uri: Uri| serve(b.clone(), Kind::Namespace, uri)),
                    );
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        KubeApi {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// A kubeconfig pointing at this server, written into `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: http://{}\nusers:\n- name: test\n  user:\n    token: test-token\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\ncurrent-context: test\n",
                self.addr
            ),
        )
        .unwrap();
        path
    }

    fn record(
        &self,
        kind: Kind,
        typ: &'static str,
        key: String,
        node: Option<String>,
        mut obj: Value,
    ) {
        let mut store = self.shared.store.lock().unwrap();
        store.rv += 1;
        let rv = store.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        match (kind, typ) {
            (Kind::Pod, "DELETED") => {
                store.pods.remove(&key);
            }
            (Kind::Pod, _) => {
                store.pods.insert(key, (node.clone(), obj.clone()));
            }
            (Kind::Namespace, "DELETED") => {
                store.namespaces.remove(&key);
            }
            (Kind::Namespace, _) => {
                store.namespaces.insert(key, obj.clone());
            }
        }
        let ev = Ev::Object {
            rv,
            kind,
            typ,
            node,
            obj,
        };
        store.log.push(ev.clone());
        let _ = self.shared.events.send(ev);
    }

    /// Adds or replaces a pod.
    pub fn put_pod(&self, pod: &Pod) {
        let key = pod_key(pod);
        let exists = self.shared.store.lock().unwrap().pods.contains_key(&key);
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let typ = if exists { "MODIFIED" } else { "ADDED" };
        self.record(
            Kind::Pod,
            typ,
            key,
            node,
            serde_json::to_value(pod).unwrap(),
        );
    }

    pub fn delete_pod(&self, pod: &Pod) {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        self.record(
            Kind::Pod,
            "DELETED",
            pod_key(pod),
            node,
            serde_json::to_value(pod).unwrap(),
        );
    }

    /// Adds or replaces a namespace.
    pub fn put_namespace(&self, ns: &Namespace) {
        let key = ns.metadata.name.clone().unwrap();
        let exists = self
            .shared
            .store
            .lock()
            .unwrap()
            .namespaces
            .contains_key(&key);
        let typ = if exists { "MODIFIED" } else { "ADDED" };
        self.record(
            Kind::Namespace,
            typ,
            key,
            None,
            serde_json::to_value(ns).unwrap(),
        );
    }

    /// Ends every open watch stream, as an API server does when a watch times out.
    pub fn drop_watches(&self) {
        let _ = self.shared.events.send(Ev::Close);
    }

    /// Takes the API down (503, watches closed) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
        if down {
            self.drop_watches();
        }
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.set_down(true);
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The query parameters, percent-decoded.
fn query(uri: &Uri) -> BTreeMap<String, String> {
    let decode = |s: &str| {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%'
                && i + 2 < b.len()
                && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
            {
                out.push(v);
                i += 3;
                continue;
            }
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
        String::from_utf8(out).unwrap()
    };
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

async fn serve(shared: Arc<Shared>, kind: Kind, uri: Uri) -> Response {
    if shared.down.load(Ordering::SeqCst) {
        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "the test API server is down", "reason": "ServiceUnavailable", "code": 503});
        return Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("content-type", "application/json")
            .body(Body::from(status.to_string()))
            .unwrap();
    }
    let q = query(&uri);
    let node = q
        .get("fieldSelector")
        .and_then(|f| f.strip_prefix("spec.nodeName="))
        .map(str::to_owned);
    let wanted = move |k: Kind, n: &Option<String>| k == kind && (node.is_none() || *n == node);
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        let from: u64 = q
            .get("resourceVersion")
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        let rx = shared.events.subscribe();
        let (backlog, now) = {
            let store = shared.store.lock().unwrap();
            let backlog: Vec<Ev> = store
                .log
                .iter()
                .filter(|e| matches!(e, Ev::Object { rv, .. } if *rv > from))
                .cloned()
                .collect();
            (backlog, store.rv)
        };
        let live = futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(Ev::Close) | Err(broadcast::error::RecvError::Closed) => return None,
                    Ok(e) => return Some((e, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                }
            }
        })
        .filter(move |e| std::future::ready(matches!(e, Ev::Object { rv, .. } if *rv > now)));
        let body = futures_util::stream::iter(backlog)
            .chain(live)
            .filter_map(move |e| {
                std::future::ready(match e {
                    Ev::Object {
                        kind: k,
                        typ,
                        node: n,
                        obj,
                        ..
                    } if wanted(k, &n) => Some(Ok::<_, Infallible>(format!(
                        "{}\n",
                        json!({"type": typ, "object": obj})
                    ))),
                    _ => None,
                })
            });
        return json_response(Body::from_stream(body));
    }
    let store = shared.store.lock().unwrap();
    let items: Vec<Value> = match kind {
        Kind::Pod => store
            .pods
            .values()
            .filter(|(n, _)| wanted(Kind::Pod, n))
            .map(|(_, v)| v.clone())
            .collect(),
        Kind::Namespace => store.namespaces.values().cloned().collect(),
    };
    let list_kind = match kind {
        Kind::Pod => "PodList",
        Kind::Namespace => "NamespaceList",
    };
    json_response(Body::from(
        json!({"apiVersion": "v1", "kind": list_kind,
               "metadata": {"resourceVersion": store.rv.to_string()}, "items": items})
        .to_string(),
    ))
}

fn json_response(body: Body) -> Response {
    Response::builder()
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// A pod scheduled to `node` with one container `app` (containerd id `container`), as
/// the API server shows it once the kubelet reported its QoS class.
pub fn pod(
    node: &str,
    ns: &str,
    name: &str,
    uid: &str,
    qos: &str,
    pod_labels: &[(&str, &str)],
    container: &str,
) -> Pod {
    Pod {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            uid: Some(uid.into()),
            labels: labels(pod_labels),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            containers: vec![Container {
                name: "app".into(),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            qos_class: Some(qos.into()),
            container_statuses: Some(vec![ContainerStatus {
                name: "app".into(),
                container_id: Some(format!("containerd://{container}")),
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        }),
    }
}

pub fn namespace(name: &str, ns_labels: &[(&str, &str)]) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: labels(ns_labels),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}
