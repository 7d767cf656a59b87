//! One gateway bind through a throttle storm, generic_nacks and a restart of the SMSC in the
//! middle of the load: every submission ends exactly once, accepted or with a definite error,
//! and no message reaches the network twice.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gateway::smpp::bind::{self, BindConfig, BindEvent};
use gateway::smpp::session::{SessionConfig, SubmitId, SubmitRequest};
use load_tests::smsc::{
    self, AccountConfig, Fault, MoMessage, MtMessage, MtOutcome, Network, SmscConfig, SmscHandle,
};
use rusmpp::pdus::SubmitSm;
use rusmpp::types::{COctetString, OctetString};

const SUBMITS: u64 = 300;

/// Delivers everything and remembers each body the network received.
struct RecordingNetwork {
    received: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Network for RecordingNetwork {
    fn handle_mt(&mut self, _now: Instant, mt: MtMessage) -> MtOutcome {
        self.received
            .lock()
            .expect("recording lock")
            .push(mt.sm.short_message);
        MtOutcome::Delivered
    }
    fn poll_mo(&mut self, _now: Instant) -> Option<MoMessage> {
        None
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

async fn start_smsc(addr: std::net::SocketAddr, received: &Arc<Mutex<Vec<Vec<u8>>>>) -> SmscHandle {
    smsc::start(
        SmscConfig::new(addr, AccountConfig::new("gw", "secret")),
        Box::new(RecordingNetwork {
            received: received.clone(),
        }),
    )
    .await
    .expect("the simulated SMSC starts on loopback")
}

fn request(i: u64) -> SubmitRequest {
    SubmitRequest {
        submit_sm: SubmitSm::builder()
            .source_addr(COctetString::from_str("GATEWAY").expect("address"))
            .destination_addr(COctetString::from_str("48600000001").expect("address"))
            .short_message(OctetString::from_str(&format!("msg-{i:05}")).expect("body"))
            .build(),
        deadline: Some(Instant::now() + Duration::from_secs(20)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_nacks_and_an_smsc_restart_lose_and_duplicate_nothing() {
    let received = Arc::new(Mutex::new(Vec::new()));
    let first = start_smsc("127.0.0.1:0".parse().expect("addr"), &received).await;
    let addr = first.local_addr();

    let session = SessionConfig {
        system_id: "gw".into(),
        password: "secret".into(),
        window: 10,
        ..SessionConfig::default()
    };
    let mut config = BindConfig::new(addr.to_string(), session);
    // At most once towards the network: what was in flight when the link died fails
    // definitely instead of being sent again.
    config.resend_in_flight = false;
    config.reconnect_initial = Duration::from_millis(20);
    config.reconnect_max = Duration::from_millis(200);
    let (events_tx, mut events) = tokio::sync::mpsc::channel(1024);
    let (handle, bind_task) = bind::spawn(config, events_tx);

    let mut ended: HashMap<SubmitId, Result<(), String>> = HashMap::new();
    let mut throttled = 0u32;
    let mut bound = 0u32;
    let mut smsc = Some(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for i in 0..SUBMITS {
        handle.submit(i, request(i)).await.expect("the bind runs");
        match i {
            30 => smsc
                .as_ref()
                .expect("running")
                .inject(Fault::ThrottleStorm(Duration::from_millis(300))),
            240 => smsc
                .as_ref()
                .expect("running")
                .inject(Fault::GenericNack { count: 3 }),
            120 => {
                // The SMSC restarts mid-load on the same address.
                smsc.take().expect("running").shutdown().await;
                smsc = Some(start_smsc(addr, &received).await);
            }
            _ => {}
        }
        // Pace the load so the faults land in the middle of it, collecting events meanwhile.
        let pace = tokio::time::sleep(Duration::from_millis(2));
        tokio::pin!(pace);
        loop {
            tokio::select! {
                () = &mut pace => break,
                Some(event) = events.recv() => record(event, &mut ended, &mut throttled, &mut bound),
            }
        }
    }
    while (ended.len() as u64) < SUBMITS {
        tokio::select! {
            Some(event) = events.recv() => record(event, &mut ended, &mut throttled, &mut bound),
            () = tokio::time::sleep_until(deadline) => panic!(
                "only {} of {SUBMITS} submissions ended: a submission was lost",
                ended.len()
            ),
        }
    }

    // Every submission ended exactly once (`record` panics on a second ending).
    assert_eq!(ended.len() as u64, SUBMITS);
    let accepted: Vec<SubmitId> = ended
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(id, _)| *id)
        .collect();
    eprintln!(
        "accepted {}, failed {}, throttle answers {throttled}",
        accepted.len(),
        SUBMITS as usize - accepted.len()
    );
    assert!(throttled > 0, "the storm throttled nothing");
    let nacked: Vec<SubmitId> = ended
        .iter()
        .filter(|(_, r)| r.as_ref().is_err_and(|e| e.contains("Rsyserr")))
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(nacked.len(), 3, "generic_nacks seen: {ended:?}");
    assert!(
        bound >= 2,
        "the bind did not bind again after the restart ({bound})"
    );
    assert!(
        accepted.len() as u64 >= SUBMITS - 40,
        "too few accepted ({} of {SUBMITS}): {ended:?}",
        accepted.len()
    );
    // No duplicate towards the network, and every accepted submission reached it.
    let bodies = received.lock().expect("recording lock").clone();
    let mut counts: HashMap<Vec<u8>, u32> = HashMap::new();
    for b in bodies {
        *counts.entry(b).or_default() += 1;
    }
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "sent twice: {duplicated:?}");
    for id in &nacked {
        let body = format!("msg-{id:05}").into_bytes();
        assert!(
            !counts.contains_key(&body),
            "submission {id} was refused with generic_nack yet reached the network"
        );
    }
    for id in &accepted {
        let body = format!("msg-{id:05}").into_bytes();
        assert!(
            counts.contains_key(&body),
            "submission {id} was accepted but never reached the network"
        );
    }

    let _ = handle.unbind().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), bind_task).await;
    if let Some(smsc) = smsc {
        smsc.shutdown().await;
    }
}

fn record(
    event: BindEvent,
    ended: &mut HashMap<SubmitId, Result<(), String>>,
    throttled: &mut u32,
    bound: &mut u32,
) {
    let (id, outcome) = match event {
        BindEvent::Accepted { id, .. } => (id, Ok(())),
        BindEvent::Failed { id, reason } => (id, Err(format!("{reason:?}"))),
        BindEvent::Throttled { .. } => {
            *throttled += 1;
            return;
        }
        BindEvent::Bound { .. } => {
            *bound += 1;
            return;
        }
        _ => return,
    };
    if let Some(earlier) = ended.insert(id, outcome.clone()) {
        panic!("submission {id} ended twice: {earlier:?} then {outcome:?}");
    }
}
