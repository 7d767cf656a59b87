//! End to end through real sockets: the gateway's registry is out of date and claims the applet
//! for a SIM that has none. The SMSC accepts the SMS-PP push (`submit_sm_resp` OK), the handset
//! fails the SIM data download, and the SMSC says so in the failure receipt the gateway asked
//! for (`stat:UNDELIV err:213`). The gateway must take that receipt as a delivery failure and
//! fall back to USSD at once, not wait for the push's expiry. Harness in `e2e_support`.
#![allow(clippy::unwrap_used)]

mod e2e_support;

use e2e_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_stk_push_to_a_sim_without_the_applet_falls_back_to_ussd_on_the_failure_receipt() {
    // The network's population has the applet on a `SHARE` of SIMs; the gateway's registry
    // believes every SIM has it.
    let env = Env::start(user(0.0, 0.0, 0.0), |c| {
        c.policy.fallback_stk_to_ussd = true;
        c.subscribers.generate.as_mut().unwrap().applet_share = 1.0;
    })
    .await;
    let m = msisdn(index_with(false, 0));
    // Without the receipt the push would end only after 60 s plus the STK grace.
    within(20, async {
        let id = start_ok(env.api, &m, 2, 60).await;
        let v = terminal(env.api, &id).await;
        assert_eq!(v["status"], "approved", "{v}");
        assert_eq!(v["channel"], "ussd", "{v}");
        assert_eq!(v["loa_achieved"], "2", "{v}");
        assert!(v["proof"].is_null(), "{v}");
        let mt = env.log.mt();
        let to_m: Vec<_> = mt.iter().filter(|x| x.sm.destination.addr == m).collect();
        // The push did reach the network, then the USSD prompt went out.
        assert!(to_m.iter().any(|x| x.sm.protocol_id == 0x7F), "{to_m:?}");
        assert!(
            to_m.iter().any(|x| x.sm.ussd_service_op == Some(2)),
            "{to_m:?}"
        );
        assert_eq!(env.log.prompts_to(&m), 2);
        // The SMSC sends receipts only when asked: the push asked for one, and it was taken.
        assert!(env.smsc.stats().snapshot().receipts >= 1);
    })
    .await;
    env.stop().await;
}
