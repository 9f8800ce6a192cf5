//! `canary-guard webhook` over real TLS: AdmissionReview requests in, JSON patches
//! out, a certificate rotated on disk without a restart, and the shared accept
//! loop's limits: handshake timeout, connection cap, drain on SIGTERM.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use canary_guard::webhook::{self, WebhookArgs};
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

/// A CA and a server certificate for `localhost` signed by it.
struct Pki {
    ca: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    Pki {
        ca: ca.der().clone(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn write_pair(dir: &Path, pki: &Pki) {
    // Key first, then the certificate, as a rotation would; each file replaced whole.
    for (name, text) in [("tls.key", &pki.key_pem), ("tls.crt", &pki.cert_pem)] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "canary-guard-webhook-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start(dir: &Path, extra: &[&str]) -> webhook::Webhook {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: WebhookArgs,
    }
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    let mut argv = vec![
        "webhook".to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--tls-cert".into(),
        cert.display().to_string(),
        "--tls-key".into(),
        key.display().to_string(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    let cli = Cli::try_parse_from(argv).unwrap();
    webhook::start(&cli.args).await.unwrap()
}

/// A TLS connection trusting only `ca`; `Err` when the handshake fails.
async fn tls_connect(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
) -> Result<TlsStream<TcpStream>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())
}

/// POSTs `body` to `path` over TLS trusting only `ca`; `Err` when the handshake fails.
async fn post(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    path: &str,
    body: &Value,
) -> Result<(u16, Value), String> {
    let tls = tls_connect(addr, ca).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Ok((
        status,
        serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned())),
    ))
}

fn pod(labels: Value, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "reviews-v2-5d8f9c-",
            "namespace": "bookinfo",
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "containers": [{
                "name": "reviews",
                "image": "reviews:2",
                "ports": [{ "name": "http", "containerPort": 9080 }],
            }],
        },
    })
}

fn admission_review(uid: &str, object: &Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "requestKind": { "group": "", "version": "v1", "kind": "Pod" },
            "requestResource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": "bookinfo",
            "operation": "CREATE",
            "userInfo": { "username": "system:serviceaccount:kube-system:replicaset-controller" },
            "object": object,
            "dryRun": false,
        },
    })
}

fn canary_labels() -> Value {
    json!({ "app": "reviews", "version": "v2", "pod-template-hash": "5d8f9c", "canary-guard.io/inject": "true" })
}

fn canary_annotations() -> Value {
    json!({ "canary-guard.io/group": "reviews", "canary-guard.io/canary-subset": "v2" })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labelled_pod_gets_the_guard_by_json_patch() {
    let dir = TempDir::new();
    let pki = pki();
    write_pair(&dir.0, &pki);
    let hook = start(
        &dir.0,
        &["--virtual-service", "reviews", "--image", "guard:test"],
    )
    .await;

    let original = pod(canary_labels(), canary_annotations());
    let (status, review) = post(
        hook.addr,
        &pki.ca,
        "/mutate",
        &admission_review("u-1", &original),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{review}");
    let response = &review["response"];
    assert_eq!(review["kind"], "AdmissionReview");
    assert_eq!(response["uid"], "u-1");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let patch: json_patch::Patch = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(response["patch"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let mut patched = original.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    let guard = &patched["spec"]["initContainers"][0];
    assert_eq!(guard["name"], "canary-guard");
    assert_eq!(guard["image"], "guard:test");
    assert_eq!(guard["restartPolicy"], "Always");
    let env = |name: &str| {
        guard["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(env("CANARY_GUARD_GROUP")["value"], "reviews");
    assert_eq!(
        env("CANARY_GUARD_UPSTREAM")["value"],
        "http://127.0.0.1:9080"
    );
    assert_eq!(
        env("POD_TEMPLATE_HASH")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.labels['pod-template-hash']"
    );
    assert_eq!(
        patched["spec"]["containers"][0]["ports"][0]["name"],
        "app-http"
    );
    assert_eq!(guard["ports"][0]["name"], "http");
    // The app container is otherwise untouched.
    assert_eq!(patched["spec"]["containers"][0]["image"], "reviews:2");
    hook.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlabelled_or_unconfigured_pods_are_admitted_unchanged() {
    let dir = TempDir::new();
    let pki = pki();
    write_pair(&dir.0, &pki);
    let hook = start(&dir.0, &["--virtual-service", "reviews"]).await;

    let plain = pod(json!({ "app": "reviews" }), canary_annotations());
    let (_, review) = post(
        hook.addr,
        &pki.ca,
        "/mutate",
        &admission_review("u-2", &plain),
    )
    .await
    .unwrap();
    assert_eq!(review["response"]["allowed"], true);
    assert!(review["response"].get("patch").is_none(), "{review}");

    // Labelled, but no canary destination anywhere: admitted, with a warning.
    let unconfigured = pod(
        canary_labels(),
        json!({ "canary-guard.io/group": "reviews" }),
    );
    let (_, review) = post(
        hook.addr,
        &pki.ca,
        "/mutate",
        &admission_review("u-3", &unconfigured),
    )
    .await
    .unwrap();
    assert_eq!(review["response"]["allowed"], true);
    assert!(review["response"].get("patch").is_none(), "{review}");
    let warning = review["response"]["warnings"][0].as_str().unwrap();
    assert!(warning.contains("no canary destination"), "{warning}");

    let (status, _) = post(hook.addr, &pki.ca, "/mutate", &json!({ "not": "a review" }))
        .await
        .unwrap();
    assert_eq!(status, 400);
    hook.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let dir = TempDir::new();
    let first = pki();
    write_pair(&dir.0, &first);
    let hook = start(
        &dir.0,
        &["--virtual-service", "reviews", "--canary-subset", "v2"],
    )
    .await;
    let review = admission_review("u-4", &pod(json!({}), json!({})));
    assert!(post(hook.addr, &first.ca, "/mutate", &review).await.is_ok());

    let second = pki();
    write_pair(&dir.0, &second);
    // The next handshake after the files change presents the new certificate.
    let mut served = None;
    for _ in 0..50 {
        if post(hook.addr, &second.ca, "/mutate", &review)
            .await
            .is_ok()
        {
            served = Some(());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served.is_some(), "the rotated certificate was never served");
    let old = post(hook.addr, &first.ca, "/mutate", &review).await;
    assert!(old.is_err(), "the old certificate is still served");

    // A broken pair keeps the last good one in service.
    std::fs::write(dir.0.join("tls.crt"), "not a certificate").unwrap();
    assert!(post(hook.addr, &second.ca, "/mutate", &review)
        .await
        .is_ok());
    hook.shutdown().await;
}

/// The shared accept loop's handshake deadline, as the webhook runs it.
fn handshake_timeout() -> Duration {
    canary_guard::server::Limits::default().handshake_timeout
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_starts_tls_is_dropped_at_the_handshake_timeout_and_holds_up_no_one() {
    let dir = TempDir::new();
    let pki = pki();
    write_pair(&dir.0, &pki);
    let hook = start(
        &dir.0,
        &["--virtual-service", "reviews", "--max-connections", "2"],
    )
    .await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(hook.addr).await.unwrap();

    // Answered while the silent client holds the other slot.
    let review = admission_review("u-5", &pod(json!({}), json!({})));
    let (status, _) = post(hook.addr, &pki.ca, "/mutate", &review).await.unwrap();
    assert_eq!(status, 200);
    assert!(started.elapsed() < handshake_timeout());

    // EOF or a reset: either way the webhook closed it.
    let closed =
        tokio::time::timeout(handshake_timeout() * 2, silent.read_to_end(&mut Vec::new())).await;
    assert!(closed.is_ok(), "the silent client is still connected");
    assert!(started.elapsed() >= handshake_timeout());
    assert_eq!(hook.shutdown().await, 0, "a connection outlived the drain");
}

#[tokio::test(start_paused = true)]
async fn the_connection_cap_counts_clients_still_in_their_handshake() {
    let dir = TempDir::new();
    let pki = pki();
    write_pair(&dir.0, &pki);
    let hook = start(
        &dir.0,
        &["--virtual-service", "reviews", "--max-connections", "1"],
    )
    .await;
    let started = Instant::now();
    let _silent = TcpStream::connect(hook.addr).await.unwrap();

    // Waits in the backlog until the silent client's handshake times out.
    let review = admission_review("u-6", &pod(json!({}), json!({})));
    let (status, _) = post(hook.addr, &pki.ca, "/mutate", &review).await.unwrap();
    assert_eq!(status, 200);
    let waited = started.elapsed();
    assert!(waited >= handshake_timeout(), "served after {waited:?}");
    assert_eq!(hook.shutdown().await, 0, "a connection outlived the drain");
}

/// Reads one response head.
async fn read_head(io: &mut (impl AsyncRead + Unpin)) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(io.read_u8().await.unwrap());
    }
    String::from_utf8(head).unwrap()
}

/// Reads one response with a content-length: its status and JSON body.
async fn read_response(io: &mut (impl AsyncRead + Unpin)) -> (u16, Value) {
    let head = read_head(io).await;
    let status = head[9..12].parse().unwrap();
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().unwrap())
        })
        .unwrap_or_else(|| panic!("no content-length in {head}"));
    let mut body = vec![0; length];
    io.read_exact(&mut body).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

/// A `canary-guard webhook` child process, killed if the test fails.
struct WebhookProcess(std::process::Child);

impl Drop for WebhookProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_review_finish_then_exits_zero() {
    let dir = TempDir::new();
    let pki = pki();
    write_pair(&dir.0, &pki);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut child = WebhookProcess(
        std::process::Command::new(env!("CARGO_BIN_EXE_canary-guard"))
            .args(["webhook", "--listen", &addr.to_string()])
            .arg("--tls-cert")
            .arg(dir.0.join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.0.join("tls.key"))
            .args(["--virtual-service", "reviews", "--canary-subset", "v2"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut listening = false;
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            listening = true;
            break;
        }
        // The webhook is another process: nothing to await but its port.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(listening, "the webhook never listened");
    let mut tls = tls_connect(addr, &pki.ca).await.unwrap();

    let body = serde_json::to_vec(&admission_review(
        "u-7",
        &pod(canary_labels(), canary_annotations()),
    ))
    .unwrap();
    let head = format!(
        "POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nexpect: 100-continue\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    // hyper sends 100 Continue once the handler reads the body: the review is
    // in flight.
    let continued = read_head(&mut tls).await;
    assert!(continued.starts_with("HTTP/1.1 100"), "{continued}");

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // The drain begins by closing the listener.
    let mut refused = false;
    for _ in 0..400 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(refused, "still accepting after SIGTERM");
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "exited with a review in flight"
    );

    tls.write_all(&body).await.unwrap();
    let (status, review) = read_response(&mut tls).await;
    assert_eq!(status, 200, "{review}");
    assert_eq!(review["response"]["uid"], "u-7");
    assert_eq!(review["response"]["patchType"], "JSONPatch");
    let exit = tokio::task::spawn_blocking(move || child.0.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "exit status {exit}");
}
