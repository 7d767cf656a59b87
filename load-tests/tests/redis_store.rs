//! The gateway on the Redis store, end to end, against a real `redis-server` the test starts
//! (scripts/test.sh installs Debian's): authorizations over USSD and the SIM applet end as the
//! users chose with their records in Redis; when Redis goes away `/readyz` says 503 and starts
//! are refused 503 `store_unavailable` with `Retry-After` (nothing is promised that is not
//! stored); when it comes back on its append-only file the gateway serves again without a
//! restart, and what was stored before is still there.
#![allow(clippy::unwrap_used)]

mod e2e_support;

use std::time::Duration;

use e2e_support::*;
use gateway::config::StoreBackend;
use gateway::store::LocalRedis;

async fn readyz(api: std::net::SocketAddr) -> u16 {
    http(api, "GET", "/readyz", &[], None).await.status
}

async fn wait_readyz(api: std::net::SocketAddr, want: u16, what: &str) {
    for _ in 0..150 {
        if readyz(api).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/readyz did not answer {want} within 15 s: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_on_redis_and_refuses_at_the_door_while_redis_is_away() {
    within(90, async {
        let redis_dir = tempfile::tempdir().unwrap();
        let redis = LocalRedis::start(redis_dir.path())
            .expect("this test needs redis-server (scripts/test.sh installs it)");
        let (url, port) = (redis.url(), redis.port());
        let env = Env::start(user(0.0, 0.0, 0.0), |config| {
            config.store.backend = StoreBackend::Redis;
            config.store.url = Some(url.clone());
            config.store.key_prefix = "e2e".into();
        })
        .await;
        wait_readyz(env.api, 200, "binds up and Redis reachable").await;

        // One USSD and one STK authorization, approved by their users.
        let ussd = start_ok(env.api, &msisdn(index_with(false, 0)), 2, 30).await;
        let stk = start_ok(env.api, &msisdn(index_with(true, 0)), 2, 30).await;
        for id in [&ussd, &stk] {
            let view = terminal(env.api, id).await;
            assert_eq!(view["status"], "approved", "{view}");
        }
        let proof_before = terminal(env.api, &stk).await["proof"].clone();
        assert!(proof_before.is_string(), "the card's proof: {proof_before}");

        // Redis goes away.
        redis.kill();
        wait_readyz(env.api, 503, "Redis is down").await;
        let r = start_auth(
            env.api,
            &auth_body(&msisdn(index_with(false, 1)), 2, 30),
            None,
        )
        .await;
        assert_eq!(r.status, 503, "{:?}", r.body);
        assert_eq!(r.body["error"], "store_unavailable", "{:?}", r.body);
        assert!(
            r.header("retry-after").is_some(),
            "a 503 without Retry-After"
        );

        // It comes back on its own files: the gateway serves again, and the results stored
        // before are read back from Redis as they were.
        let _again = LocalRedis::start_on(redis_dir.path(), Some(port)).unwrap();
        wait_readyz(env.api, 200, "Redis is back").await;
        let view = terminal(env.api, &stk).await;
        assert_eq!(view["status"], "approved");
        assert_eq!(view["proof"], proof_before);
        let after = start_ok(env.api, &msisdn(index_with(false, 1)), 2, 30).await;
        assert_eq!(terminal(env.api, &after).await["status"], "approved");
        env.stop().await;
    })
    .await;
}
