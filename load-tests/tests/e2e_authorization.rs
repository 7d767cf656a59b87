//! End to end: the gateway's `channel::Authorizer` bound over real loopback SMPP to the simulated
//! SMSC, which hosts simulated handsets (`sim_applet_model::handset`) whose users always approve
//! after compressed think times. Every authorization must end with exactly one result; SIM
//! applet approvals must carry a MAC that verifies with the card's key.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::channel::{
    AuthChannel, AuthRequest, AuthResult, Authorizer, AuthorizerConfig, PinVerifier,
};
use gateway::smpp::bind::BindConfig;
use gateway::smpp::session::{SessionConfig, SubmitFailure};
use load_tests::smsc::{
    start, AccountConfig, Address, MoMessage, MtMessage, MtOutcome, Network, SmFields, SmscConfig,
};
use sim_applet_model::applet::protocol::Loa;
use sim_applet_model::applet::state::CardSecrets;
use sim_applet_model::handset::user::UserParams;
use sim_applet_model::handset::{self, Handset, HandsetParams, MtSms, UssdMt, VirtualInstant};
use sim_applet_model::text::gsm7_decode;

const SEED: u64 = 7;
const MSISDN_BASE: u64 = 48_600_000_000;
/// Virtual milliseconds per real millisecond: an 8 s think time takes 80 ms, and a scheduling
/// delay of 30 ms is 3 s for the handset, well inside its 25 s UI timers.
const COMPRESSION: u128 = 100;

/// Handsets behind the SMSC, MSISDN = base + index (a small stand-in for the load-tests
/// population, kept in this test so the test depends only on the handset model).
struct Handsets {
    start: Instant,
    params: Arc<HandsetParams>,
    phones: HashMap<u32, Handset>,
    /// Per handset: the last MT's source and USSD session TLVs, echoed in answers.
    peers: HashMap<u32, (Address, Option<u16>, Option<u16>)>,
    out: VecDeque<MoMessage>,
}

impl Handsets {
    fn new(start: Instant) -> Self {
        let user = UserParams {
            p_ignore: 0.0,
            p_deny: 0.0,
            p_wrong_pin: 0.0,
            ..UserParams::default()
        };
        Self {
            start,
            params: Arc::new(HandsetParams {
                population_seed: SEED,
                user,
                ..HandsetParams::default()
            }),
            phones: HashMap::new(),
            peers: HashMap::new(),
            out: VecDeque::new(),
        }
    }

    fn virtual_now(&self, now: Instant) -> VirtualInstant {
        let ms = now.saturating_duration_since(self.start).as_millis() * COMPRESSION;
        VirtualInstant(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    fn collect(&mut self) {
        for (&index, phone) in &mut self.phones {
            while let Some(mo) = phone.poll_mo() {
                let Some((peer, its, umr)) = self.peers.get(&index).cloned() else {
                    continue;
                };
                let source = Address::international((MSISDN_BASE + u64::from(index)).to_string());
                let sm = match mo {
                    handset::MoMessage::UssdAnswer { text } => SmFields {
                        source,
                        destination: peer,
                        service_type: "USSD".into(),
                        short_message: text.into_bytes(),
                        ussd_service_op: Some(18),
                        its_session_info: its,
                        user_message_reference: umr,
                        ..SmFields::default()
                    },
                    handset::MoMessage::Sms(sms) => SmFields {
                        source,
                        destination: Address {
                            ton: 0,
                            npi: 0,
                            addr: sms.destination,
                        },
                        esm_class: if sms.udhi { 0x40 } else { 0 },
                        protocol_id: sms.protocol_id,
                        data_coding: sms.data_coding,
                        short_message: sms.user_data,
                        ..SmFields::default()
                    },
                };
                self.out.push_back(MoMessage { sm });
            }
        }
    }
}

impl Network for Handsets {
    fn handle_mt(&mut self, now: Instant, mt: MtMessage) -> MtOutcome {
        let v = self.virtual_now(now);
        let Some(index) = mt
            .sm
            .destination
            .addr
            .parse::<u64>()
            .ok()
            .and_then(|m| m.checked_sub(MSISDN_BASE))
            .and_then(|i| u32::try_from(i).ok())
        else {
            return MtOutcome::Undeliverable { err: 1 };
        };
        let params = self.params.clone();
        let phone = self
            .phones
            .entry(index)
            .or_insert_with(|| Handset::new(params, index, true));
        self.peers.insert(
            index,
            (
                mt.sm.source.clone(),
                mt.sm.its_session_info,
                mt.sm.user_message_reference,
            ),
        );
        if let Some(op) = mt.sm.ussd_service_op {
            // The gateway's spec dialect: one GSM septet per octet, USSR request (2) asks.
            let text = gsm7_decode(&mt.sm.short_message).unwrap_or_default();
            phone.handle_mt_ussd(
                v,
                UssdMt {
                    text,
                    expects_answer: op == 2,
                },
            );
        } else {
            phone.handle_mt_sms_pp(
                v,
                &MtSms {
                    originator: mt.sm.source.addr.clone(),
                    protocol_id: mt.sm.protocol_id,
                    data_coding: mt.sm.data_coding,
                    user_data: mt.sm.short_message.clone(),
                },
            );
        }
        self.collect();
        MtOutcome::Delivered
    }

    fn poll_mo(&mut self, now: Instant) -> Option<MoMessage> {
        if self.out.is_empty() {
            let v = self.virtual_now(now);
            for phone in self.phones.values_mut() {
                if phone.poll_timeout().is_some_and(|at| at <= v) {
                    phone.handle_timeout(v);
                }
            }
            self.collect();
        }
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if !self.out.is_empty() {
            return Some(self.start);
        }
        self.phones
            .values()
            .filter_map(Handset::poll_timeout)
            .min()
            .map(|v| {
                // Round up so the wake-up finds the timer due.
                let real_ms = u128::from(v.0).div_ceil(COMPRESSION);
                self.start + Duration::from_millis(u64::try_from(real_ms).unwrap_or(u64::MAX))
            })
    }
}

/// The gateway's PIN check for USSD LoA3, against the PIN derived for the population.
struct PopulationPins;

#[async_trait::async_trait]
impl PinVerifier for PopulationPins {
    async fn verify(&self, msisdn: &str, pin: &str) -> bool {
        let index = msisdn.parse::<u64>().unwrap() - MSISDN_BASE;
        CardSecrets::derive(SEED, index).initial_pin.digits() == pin.as_bytes()
    }
}

fn authorizer_config(addr: String) -> AuthorizerConfig {
    let session = SessionConfig {
        system_id: "gw".into(),
        password: "secret".into(),
        window: 32,
        ..SessionConfig::default()
    };
    let mut bind = BindConfig::new(addr, session);
    bind.reconnect_initial = Duration::from_millis(50);
    bind.reconnect_max = Duration::from_millis(200);
    let mut config = AuthorizerConfig::new(vec![bind]);
    config.max_in_flight = 16;
    config
}

fn request(index: u64, loa: Loa, channel: AuthChannel) -> AuthRequest {
    AuthRequest {
        msisdn: (MSISDN_BASE + index).to_string(),
        loa,
        channel,
        rp_name: "ePUAP".into(),
        consent: "Log in?".into(),
        binding_code: "K7".into(),
        // Virtual seconds on the card: room for the compressed think times.
        expiry_secs: 600,
        ussd_key: None,
        stk_nonce: None,
        ended_elsewhere: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_authorizations_over_ussd_and_the_sim_applet_each_end_once_and_approve() {
    let smsc = start(
        SmscConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            AccountConfig::new("gw", "secret"),
        ),
        Box::new(Handsets::new(tokio::time::Instant::now().into_std())),
    )
    .await
    .unwrap();
    let (auth, driver) = Authorizer::start(
        authorizer_config(smsc.local_addr().to_string()),
        Some(Arc::new(PopulationPins)),
    );

    let mut jobs = Vec::new();
    for i in 0..60u64 {
        let (loa, channel) = match i % 4 {
            0 => (Loa::Loa2, AuthChannel::Ussd),
            1 => (Loa::Loa3, AuthChannel::Ussd),
            2 => (Loa::Loa2, stk(i)),
            _ => (Loa::Loa3, stk(i)),
        };
        let auth = auth.clone();
        let req = request(i, loa, channel);
        jobs.push(tokio::spawn(
            async move { (i, loa, auth.authorize(req).await) },
        ));
    }
    let all = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(jobs),
    )
    .await
    .expect("every authorization ends");
    assert_eq!(all.len(), 60);
    for job in all {
        let (i, loa, result) = job.unwrap();
        match result {
            AuthResult::Approved { loa: got, proof } => {
                assert_eq!(got, loa, "#{i}");
                if i % 4 >= 2 {
                    let proof = proof.unwrap_or_else(|| panic!("#{i}: STK approval without proof"));
                    assert!(proof.verify(&CardSecrets::derive(SEED, i)), "#{i}");
                    assert!(!proof.verify(&CardSecrets::derive(SEED, i + 1)), "#{i}");
                } else {
                    assert!(proof.is_none(), "#{i}");
                }
            }
            other => panic!("#{i} ({loa:?}) ended {other:?}"),
        }
    }
    auth.shutdown().await;
    driver.await.unwrap();
    smsc.shutdown().await;
}

fn stk(index: u64) -> AuthChannel {
    AuthChannel::Stk {
        secrets: CardSecrets::derive(SEED, index),
        counter: 1,
    }
}

#[tokio::test]
async fn with_no_smsc_every_authorization_ends_with_a_definite_delivery_error() {
    // A port that was free a moment ago: nothing listens, the bind keeps reconnecting.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = authorizer_config(port.to_string());
    config.submit_timeout = Duration::from_millis(300);
    let (auth, driver) = Authorizer::start(config, Some(Arc::new(PopulationPins)));
    let jobs: Vec<_> = (0..8u64)
        .map(|i| {
            let auth = auth.clone();
            let channel = if i % 2 == 0 {
                AuthChannel::Ussd
            } else {
                stk(i)
            };
            tokio::spawn(async move { auth.authorize(request(i, Loa::Loa2, channel)).await })
        })
        .collect();
    let all = tokio::time::timeout(
        Duration::from_secs(20),
        futures_util::future::join_all(jobs),
    )
    .await
    .expect("every authorization ends");
    for r in all {
        assert_eq!(
            r.unwrap(),
            AuthResult::DeliveryError(SubmitFailure::NoLinkByDeadline)
        );
    }
    auth.shutdown().await;
    driver.await.unwrap();
    assert_eq!(
        auth.authorize(request(0, Loa::Loa2, AuthChannel::Ussd))
            .await,
        AuthResult::Unavailable
    );
}
