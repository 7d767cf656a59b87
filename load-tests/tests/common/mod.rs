//! A tiny test ESME of our own: rusmpp's `CommandCodec` over a real socket, so the SMSC is
//! checked against framing it did not write itself.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use load_tests::smsc::{self, AccountConfig, EchoNetwork, SmscConfig, SmscHandle};
use rusmpp::pdus::{
    BindReceiver, BindTransceiver, BindTransmitter, DeliverSm, DeliverSmResp, SubmitSm,
};
use rusmpp::tlvs::{MessageSubmissionRequestTlvValue, TlvValue};
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{
    InterfaceVersion, ItsSessionInfo, Npi, RegisteredDelivery, ServiceType, Ton, UssdServiceOp,
};
use rusmpp::{Command, CommandStatus, Pdu};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::{Encoder, Framed};

pub const SYSTEM_ID: &str = "gw";
pub const PASSWORD: &str = "secret";
/// Upper bound on any single wait; a test that hits it has failed.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn config() -> SmscConfig {
    let mut c = SmscConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        AccountConfig::new(SYSTEM_ID, PASSWORD),
    );
    c.echo.ussd_reply_delay = Duration::from_millis(5);
    // Shutdown waits this long for unbind_resp from test ESMEs that are no longer reading.
    c.response_timeout = Duration::from_millis(300);
    c
}

pub async fn start(config: SmscConfig) -> SmscHandle {
    let echo = EchoNetwork::new(config.echo.clone());
    smsc::start(config, Box::new(echo)).await.unwrap()
}

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Tx,
    Rx,
    Trx,
}

pub struct Esme {
    pub framed: Framed<TcpStream, CommandCodec>,
    seq: u32,
}

fn c<const MIN: usize, const MAX: usize>(s: &str) -> COctetString<MIN, MAX> {
    COctetString::from_str(s).unwrap()
}

impl Esme {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        Self {
            framed: Framed::new(stream, CommandCodec::new()),
            seq: 0,
        }
    }

    pub async fn send(&mut self, pdu: impl Into<Pdu>) -> u32 {
        self.seq += 1;
        let seq = self.seq;
        self.send_command(Command::new(CommandStatus::EsmeRok, seq, pdu))
            .await;
        seq
    }

    /// Encodes with rusmpp's own codec (not the SMSC's) and writes.
    pub async fn send_command(&mut self, cmd: Command) {
        let mut buf = BytesMut::new();
        CommandCodec::new().encode(&cmd, &mut buf).unwrap();
        self.write_raw(&buf).await;
    }

    pub async fn write_raw(&mut self, bytes: &[u8]) {
        self.framed.get_mut().write_all(bytes).await.unwrap();
    }

    /// Next command, or `None` when the SMSC closed the connection.
    pub async fn recv(&mut self) -> Option<Command> {
        match tokio::time::timeout(WAIT, self.framed.next()).await {
            Ok(Some(Ok(cmd))) => Some(cmd),
            Ok(Some(Err(_))) | Ok(None) => None,
            Err(_) => panic!("nothing from the SMSC within {WAIT:?}"),
        }
    }

    /// Sends and waits for the response with the same sequence number. `deliver_sm` and
    /// `enquire_link` from the SMSC arriving meanwhile are answered OK and kept in `seen`.
    pub async fn request(&mut self, pdu: impl Into<Pdu>, seen: &mut Vec<DeliverSm>) -> Command {
        let seq = self.send(pdu).await;
        loop {
            let cmd = self.recv().await.expect("connection closed while waiting");
            if cmd.sequence_number() == seq && cmd.id() != rusmpp::CommandId::DeliverSm {
                return cmd;
            }
            self.answer_unsolicited(cmd, seen).await;
        }
    }

    async fn answer_unsolicited(&mut self, cmd: Command, seen: &mut Vec<DeliverSm>) {
        match cmd.pdu() {
            Some(Pdu::DeliverSm(d)) => {
                seen.push(d.clone());
                self.send_command(Command::new(
                    CommandStatus::EsmeRok,
                    cmd.sequence_number(),
                    DeliverSmResp::default(),
                ))
                .await;
            }
            Some(Pdu::EnquireLink) => {
                self.send_command(Command::new(
                    CommandStatus::EsmeRok,
                    cmd.sequence_number(),
                    Pdu::EnquireLinkResp,
                ))
                .await;
            }
            _ => panic!("unexpected {cmd:?}"),
        }
    }

    /// Waits for the next `deliver_sm` and answers it with `status`.
    pub async fn next_deliver(&mut self, status: CommandStatus) -> DeliverSm {
        loop {
            let cmd = self
                .recv()
                .await
                .expect("closed while waiting for deliver_sm");
            match cmd.pdu() {
                Some(Pdu::DeliverSm(d)) => {
                    let d = d.clone();
                    self.send_command(Command::new(
                        status,
                        cmd.sequence_number(),
                        DeliverSmResp::default(),
                    ))
                    .await;
                    return d;
                }
                Some(Pdu::EnquireLink) => {
                    let mut v = Vec::new();
                    self.answer_unsolicited(cmd, &mut v).await;
                }
                _ => panic!("unexpected {cmd:?}"),
            }
        }
    }

    pub async fn bind_as(&mut self, kind: Kind, system_id: &str, password: &str) -> CommandStatus {
        let (id, pw, ty, range) = (c(system_id), c(password), c(""), c(""));
        let v = InterfaceVersion::Smpp3_4;
        let pdu: Pdu = match kind {
            Kind::Tx => {
                BindTransmitter::new(id, pw, ty, v, Ton::Unknown, Npi::Unknown, range).into()
            }
            Kind::Rx => BindReceiver::new(id, pw, ty, v, Ton::Unknown, Npi::Unknown, range).into(),
            Kind::Trx => {
                BindTransceiver::new(id, pw, ty, v, Ton::Unknown, Npi::Unknown, range).into()
            }
        };
        let resp = self.request(pdu, &mut Vec::new()).await;
        resp.status()
    }

    pub async fn bound(addr: SocketAddr, kind: Kind) -> Self {
        let mut e = Self::connect(addr).await;
        assert_eq!(
            e.bind_as(kind, SYSTEM_ID, PASSWORD).await,
            CommandStatus::EsmeRok
        );
        e
    }
}

pub fn sms(dest: &str, text: &str, receipt: bool) -> SubmitSm {
    SubmitSm::builder()
        .source_addr_ton(Ton::International)
        .source_addr_npi(Npi::Isdn)
        .source_addr(c("4800"))
        .dest_addr_ton(Ton::International)
        .dest_addr_npi(Npi::Isdn)
        .destination_addr(c(dest))
        .registered_delivery(RegisteredDelivery::from(u8::from(receipt)))
        .short_message(OctetString::from_slice(text.as_bytes()).unwrap())
        .build()
}

pub fn ussd_request(dest: &str, text: &str, session: u8) -> SubmitSm {
    let mut sm = SubmitSm::builder()
        .service_type(ServiceType::new(c("USSD")))
        .source_addr_ton(Ton::Unknown)
        .source_addr_npi(Npi::Unknown)
        .source_addr(c("*123#"))
        .dest_addr_ton(Ton::International)
        .dest_addr_npi(Npi::Isdn)
        .destination_addr(c(dest))
        .short_message(OctetString::from_slice(text.as_bytes()).unwrap())
        .build();
    sm.push_tlv(MessageSubmissionRequestTlvValue::UssdServiceOp(
        UssdServiceOp::UssrRequest,
    ));
    sm.push_tlv(MessageSubmissionRequestTlvValue::ItsSessionInfo(
        ItsSessionInfo::new(session, 0),
    ));
    sm
}

pub fn tlv(d: &DeliverSm, pick: impl Fn(&TlvValue) -> bool) -> Option<TlvValue> {
    d.tlvs()
        .iter()
        .filter_map(|t| t.value())
        .find(|v| pick(v))
        .cloned()
}
