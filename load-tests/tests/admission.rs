//! Admission by capacity, end to end: two operators on the simulated SMSC, one of them held by
//! its contract to 1 submit/s per bind (2 binds). A burst of starts for its subscribers is
//! mostly refused at the door (503 `no_capacity` with `Retry-After`), the other operator's
//! subscribers are all accepted meanwhile, and every accepted authorization ends as its user
//! chose: none fails for lack of capacity.
#![allow(clippy::unwrap_used)]

mod e2e_support;

use std::time::Duration;

use e2e_support::*;
use futures_util::future::join_all;

/// Subscribers 0..32 belong to `red` (throttled by contract), 32..64 to `blue`.
const SPLIT: u64 = 32;

async fn wait_ready(api: std::net::SocketAddr) {
    for _ in 0..100 {
        if http(api, "GET", "/readyz", &[], None).await.status == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway's binds did not come up within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_operator_refuses_at_the_door_without_refusing_another_and_fails_nothing_it_accepted(
) {
    within(60, async {
        // Each operator has its own SMSC, as in life: an SMSC hands a handset's answer to any
        // bind of its account, so operators sharing one would see each other's answers.
        let (blue_smsc, _) = start_smsc(user(0.0, 0.0, 0.0)).await;
        let blue_addr = blue_smsc.local_addr().to_string();
        let env = Env::start(user(0.0, 0.0, 0.0), |config| {
            let mut blue = config.operators[0].clone();
            for bind in &mut blue.binds {
                bind.address = blue_addr.clone();
            }
            let red = &mut config.operators[0];
            red.ranges = vec![format!("{}..{}", BASE, BASE + SPLIT - 1).parse().unwrap()];
            red.max_prompt_wait_ms = 1000;
            for bind in &mut red.binds {
                bind.max_submits_per_sec = Some(1);
            }
            blue.name = "blue".into();
            blue.ranges = vec![format!("{}..{}", BASE + SPLIT, BASE + 63).parse().unwrap()];
            config.operators.push(blue);
        })
        .await;
        wait_ready(env.api).await;

        let burst = |range: std::ops::Range<u64>| {
            join_all(range.map(|i| {
                let body = auth_body(&msisdn(i), 2, 30);
                async move { start_auth(env.api, &body, None).await }
            }))
        };
        let red = burst(0..SPLIT).await;
        let blue = burst(SPLIT..64).await;

        let mut accepted = Vec::new();
        let mut refused = 0;
        for r in &red {
            match r.status {
                201 => accepted.push(r.body["id"].as_str().unwrap().to_owned()),
                503 => {
                    assert_eq!(r.body["error"], "no_capacity", "{:?}", r.body);
                    let retry: u64 = r
                        .header("retry-after")
                        .expect("a 503 without Retry-After")
                        .parse()
                        .unwrap();
                    assert!((1..=60).contains(&retry), "Retry-After {retry}");
                    refused += 1;
                }
                other => panic!("unexpected {other}: {:?}", r.body),
            }
        }
        // 2 submits/s and 1 s of waiting allowed: a couple admitted, the burst refused.
        assert!(
            !accepted.is_empty() && accepted.len() <= 6,
            "red admitted {}",
            accepted.len()
        );
        assert_eq!(refused + accepted.len(), SPLIT as usize);
        for r in &blue {
            assert_eq!(
                r.status, 201,
                "the other operator's subscriber was refused: {:?}",
                r.body
            );
            accepted.push(r.body["id"].as_str().unwrap().to_owned());
        }

        for id in &accepted {
            let done = terminal(env.api, id).await;
            assert_eq!(
                (done["status"].as_str(), done["reason"].as_str()),
                (Some("approved"), Some("user_approved")),
                "an accepted authorization did not end as its user chose: {done}"
            );
        }
        env.stop().await;
        blue_smsc.shutdown().await;
    })
    .await;
}
