//! The webhook receiver against kihon4's own signer: what it signs the
//! receiver (the official `standardwebhooks` library) accepts and records;
//! anything else it refuses; its modes and outages are what they say.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kihon4_core::changes::webhooks::{new_secret, signature_header};
use kihon4_test_support::webhook_receiver::{Received, WebhookReceiver};
use serde_json::{Value, json};

/// A folder of its own, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "kihon4-webhook-receiver-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A body of the shape kihon4 sends: `{type, timestamp, data}`.
fn body(seq: i64) -> Vec<u8> {
    let event_id = uuid::Uuid::new_v4();
    serde_json::to_vec(&json!({
        "type": "customer.updated",
        "timestamp": "2026-04-01T09:00:00.000000Z",
        "data": {
            "event_id": event_id,
            "cursor": format!("c1_{seq}"),
            "customer_id": "5f0c8a8e-8b7a-4d43-9a57-0f2d4b1f6c11",
            "external_ref": "ext-1",
            "customer_seq": seq,
            "occurred_at": "2026-04-01T09:00:00.000000Z",
            "occurred_on_jst": "2026-04-01",
        },
    }))
    .unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// POSTs `body` as message `msg_id`, signed with `secrets` at `timestamp`.
async fn post_at(
    url: &str,
    secrets: &[&str],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> reqwest::Result<reqwest::Response> {
    let signature = signature_header(secrets, msg_id, timestamp, body).expect("signed");
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(url)
        .header("webhook-id", msg_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
}

/// [`post_at`] now, answering the status.
async fn post(url: &str, secrets: &[&str], msg_id: &str, body: &[u8]) -> u16 {
    post_at(url, secrets, msg_id, now(), body)
        .await
        .expect("the receiver answers")
        .status()
        .as_u16()
}

#[tokio::test]
async fn what_kihon4_signs_is_verified_and_recorded() {
    let dir = Dir::new();
    let secret = new_secret();
    let receiver = WebhookReceiver::start(dir.path(), &[&secret]);
    assert!(receiver.url().ends_with("/hook"));
    let sent = body(7);
    let timestamp = now();
    let response = post_at(&receiver.url(), &[&secret], "msg_one", timestamp, &sent)
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);

    let got = receiver.received().await;
    assert_eq!((got.rejected, got.failed), (0, 0));
    assert_eq!(got.events.len(), 1);
    let event = &got.events[0];
    let data: Value = serde_json::from_slice::<Value>(&sent).unwrap()["data"].clone();
    assert_eq!(event.webhook_id, "msg_one");
    assert_eq!(event.webhook_timestamp, timestamp);
    assert_eq!(event.event_type, "customer.updated");
    assert_eq!(event.timestamp, "2026-04-01T09:00:00.000000Z");
    assert_eq!(event.cursor, "c1_7");
    assert_eq!(event.customer_id, data["customer_id"].as_str().unwrap());
    assert_eq!(event.customer_seq, 7);
    assert_eq!(event.event_id, data["event_id"].as_str().unwrap());
    assert_eq!(event.secret_index, 0);
    assert!(event.received_at.starts_with("20"), "{}", event.received_at);

    // The file holds the same record.
    let lines = std::fs::read_to_string(receiver.out()).unwrap();
    assert_eq!(lines.lines().count(), 1);
    let line: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(line["event_id"], data["event_id"]);
}

#[tokio::test]
async fn anything_else_is_rejected_and_not_recorded() {
    let dir = Dir::new();
    let secret = new_secret();
    let other = new_secret();
    let receiver = WebhookReceiver::start(dir.path(), &[&secret]);
    let url = receiver.url();

    // Another secret.
    assert_eq!(post(&url, &[&other], "msg_a", &body(1)).await, 401);
    assert_eq!(receiver.received().await.rejected, 1);

    // The right secret, but the body changed after signing.
    let signed = body(2);
    let signature = signature_header(&[&secret], "msg_b", now(), &signed).unwrap();
    let mut tampered = signed.clone();
    let at = tampered.iter().position(|&b| b == b'2').unwrap();
    tampered[at] = b'3';
    let status = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(&url)
        .header("webhook-id", "msg_b")
        .header("webhook-timestamp", now().to_string())
        .header("webhook-signature", signature)
        .body(tampered)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 401);

    // Signed right, but ten minutes old (the library allows five).
    let old = post_at(&url, &[&secret], "msg_c", now() - 600, &body(3))
        .await
        .unwrap();
    assert_eq!(old.status().as_u16(), 401);

    // No signature at all.
    let bare = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(&url)
        .body(body(4))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status().as_u16(), 401);

    let got = receiver.received().await;
    assert_eq!(
        got,
        Received {
            events: vec![],
            rejected: 4,
            failed: 0
        }
    );
    assert_eq!(std::fs::read_to_string(receiver.out()).unwrap(), "");
}

#[tokio::test]
async fn each_secret_is_tried_and_the_one_that_verified_is_told() {
    let dir = Dir::new();
    let (a, b, c) = (new_secret(), new_secret(), new_secret());
    let mut receiver = WebhookReceiver::start(dir.path(), &[&a, &b]);
    let url = receiver.url();
    assert_eq!(post(&url, &[&b], "msg_b", &body(1)).await, 204);
    // During a rotation kihon4 signs with both: either verifies.
    assert_eq!(post(&url, &[&c, &a], "msg_ca", &body(2)).await, 204);
    let indexes: Vec<usize> = receiver
        .received()
        .await
        .events
        .iter()
        .map(|e| e.secret_index)
        .collect();
    assert_eq!(indexes, [1, 0]);

    // New secrets replace the old ones, and are kept across a restart.
    let state = receiver.set(json!({"secrets": [&c]})).await;
    assert_eq!(state["secrets"], 1);
    assert_eq!(post(&url, &[&a], "msg_a", &body(3)).await, 401);
    receiver.stop();
    receiver.resume();
    assert_eq!(post(&url, &[&c], "msg_c", &body(4)).await, 204);
    assert_eq!(post(&url, &[&b], "msg_b2", &body(5)).await, 401);
    let got = receiver.received().await;
    assert_eq!(got.events.len(), 3);
    assert_eq!(got.rejected, 1, "counts start again after a restart");
}

#[tokio::test]
async fn down_and_flaky_answer_errors_and_record_nothing() {
    let dir = Dir::new();
    let secret = new_secret();
    let receiver = WebhookReceiver::start(dir.path(), &[&secret]);
    let url = receiver.url();

    let state = receiver
        .set(json!({"mode": "down", "retry_after": 2}))
        .await;
    assert_eq!(state["mode"], "down");
    let down = post_at(&url, &[&secret], "msg_1", now(), &body(1))
        .await
        .unwrap();
    assert_eq!(down.status().as_u16(), 503);
    assert_eq!(down.headers()["retry-after"], "2");
    // Down still checks signatures first.
    assert_eq!(post(&url, &[&new_secret()], "msg_x", &body(1)).await, 401);

    receiver
        .set(json!({"mode": "down", "retry_after": null}))
        .await;
    let down = post_at(&url, &[&secret], "msg_1", now(), &body(1))
        .await
        .unwrap();
    assert_eq!(down.status().as_u16(), 503);
    assert!(down.headers().get("retry-after").is_none());

    receiver
        .set(json!({"mode": "flaky", "fail_rate": 0.5, "seed": 3}))
        .await;
    let mut statuses = Vec::new();
    for i in 0..40 {
        statuses.push(post(&url, &[&secret], &format!("msg_f{i}"), &body(i)).await);
    }
    let ok = statuses.iter().filter(|&&s| s == 204).count();
    let failed = statuses.iter().filter(|&&s| s == 500).count();
    assert_eq!(ok + failed, 40, "{statuses:?}");
    assert!(ok > 0 && failed > 0, "{statuses:?}");

    receiver.set(json!({"mode": "up"})).await;
    assert_eq!(post(&url, &[&secret], "msg_up", &body(99)).await, 204);

    let got = receiver.received().await;
    assert_eq!(got.events.len(), ok + 1);
    assert_eq!(got.failed, 2 + failed as u64);
    assert_eq!(got.rejected, 1);
    assert_eq!(got.events.last().unwrap().webhook_id, "msg_up");
}

#[tokio::test]
async fn a_bad_control_is_refused() {
    let dir = Dir::new();
    let receiver = WebhookReceiver::start(dir.path(), &[&new_secret()]);
    let status = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("http://127.0.0.1:{}/_control", receiver.port))
        .json(&json!({"mode": "sideways"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 400);
    assert_eq!(receiver.set(json!({})).await["mode"], "up");
}

#[tokio::test]
async fn a_stopped_receiver_refuses_connections_and_resumes_with_its_records() {
    let dir = Dir::new();
    let secret = new_secret();
    let mut receiver = WebhookReceiver::start(dir.path(), &[&secret]);
    let url = receiver.url();
    assert_eq!(post(&url, &[&secret], "msg_1", &body(1)).await, 204);

    receiver.stop();
    assert!(!receiver.is_running());
    let refused = post_at(&url, &[&secret], "msg_2", now(), &body(2))
        .await
        .expect_err("nothing listens");
    assert!(refused.is_connect(), "{refused}");
    // While stopped, the file still tells what arrived.
    assert_eq!(receiver.received().await.events.len(), 1);

    receiver.resume();
    assert_eq!(receiver.url(), url);
    assert_eq!(post(&url, &[&secret], "msg_2", &body(2)).await, 204);
    let got = receiver
        .wait_for(2, Duration::from_secs(5))
        .await
        .events
        .into_iter()
        .map(|e| e.webhook_id)
        .collect::<Vec<_>>();
    assert_eq!(got, ["msg_1", "msg_2"]);
}
