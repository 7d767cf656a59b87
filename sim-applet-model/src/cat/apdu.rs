//! The APDU layer of the toolkit (short APDUs, TS 102 221 / TS 102 223 §6): ENVELOPE
//! (`80 C2 00 00 Lc`), FETCH (`80 12 00 00 Le`), TERMINAL RESPONSE (`80 14 00 00 Lc`), and the
//! status words the card answers with (`90 00`, `91 XX` a proactive command of XX octets is
//! pending, `93 00` toolkit busy, `9E XX` / `9F XX`).

use super::CatError;

/// CLA of toolkit commands.
pub const CLA_TOOLKIT: u8 = 0x80;
pub const INS_ENVELOPE: u8 = 0xC2;
pub const INS_FETCH: u8 = 0x12;
pub const INS_TERMINAL_RESPONSE: u8 = 0x14;

/// A short command APDU. `data` empty means no Lc; `le` is the raw Le octet (0x00 means 256).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Apdu {
    pub cla: u8,
    pub ins: u8,
    pub p1: u8,
    pub p2: u8,
    pub data: Vec<u8>,
    pub le: Option<u8>,
}

impl Apdu {
    /// ENVELOPE with a BER-TLV (e.g. an encoded [`super::SmsPpDownload`]).
    pub fn envelope(data: Vec<u8>) -> Self {
        Self {
            cla: CLA_TOOLKIT,
            ins: INS_ENVELOPE,
            p1: 0,
            p2: 0,
            data,
            le: None,
        }
    }

    /// FETCH of a proactive command of `len` octets (from `91 len`).
    pub fn fetch(len: u8) -> Self {
        Self {
            cla: CLA_TOOLKIT,
            ins: INS_FETCH,
            p1: 0,
            p2: 0,
            data: Vec::new(),
            le: Some(len),
        }
    }

    /// TERMINAL RESPONSE with an encoded [`super::TerminalResponse`].
    pub fn terminal_response(data: Vec<u8>) -> Self {
        Self {
            cla: CLA_TOOLKIT,
            ins: INS_TERMINAL_RESPONSE,
            p1: 0,
            p2: 0,
            data,
            le: None,
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, CatError> {
        let lc = u8::try_from(self.data.len()).map_err(|_| CatError::Invalid {
            field: "APDU data",
            reason: "more than 255 octets (short APDU)",
        })?;
        let mut out = Vec::with_capacity(self.data.len() + 6);
        out.extend_from_slice(&[self.cla, self.ins, self.p1, self.p2]);
        if lc > 0 {
            out.push(lc);
            out.extend_from_slice(&self.data);
        }
        if let Some(le) = self.le {
            out.push(le);
        }
        Ok(out)
    }

    /// Decode cases 1 to 4 of a short APDU.
    pub fn decode(input: &[u8]) -> Result<Self, CatError> {
        let [cla, ins, p1, p2, body @ ..] = input else {
            return Err(CatError::Apdu {
                at: input.len(),
                reason: "shorter than the 4-octet header",
            });
        };
        let (data, le) = match body {
            [] => (&[][..], None),
            [le] => (&[][..], Some(*le)),
            [0, ..] => {
                return Err(CatError::Apdu {
                    at: 4,
                    reason: "Lc 0 with data following (extended length not supported)",
                })
            }
            [lc, rest @ ..] => {
                let lc = usize::from(*lc);
                match rest.len().checked_sub(lc) {
                    Some(0) => (rest, None),
                    Some(1) => (&rest[..lc], Some(rest[lc])),
                    Some(_) => {
                        return Err(CatError::Apdu {
                            at: 5 + lc + 1,
                            reason: "octets after Le",
                        })
                    }
                    None => {
                        return Err(CatError::Apdu {
                            at: input.len(),
                            reason: "data shorter than Lc",
                        })
                    }
                }
            }
        };
        Ok(Self {
            cla: *cla,
            ins: *ins,
            p1: *p1,
            p2: *p2,
            data: data.to_vec(),
            le,
        })
    }
}

/// Status word of a response APDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusWord {
    /// 90 00.
    Ok,
    /// 91 XX: done, and a proactive command of XX octets waits for FETCH.
    ProactiveCommandPending(u8),
    /// 93 00: the toolkit is busy; retry the ENVELOPE later.
    ToolkitBusy,
    /// 9E XX: data download error, XX octets of response data available.
    DataDownloadError(u8),
    /// 9F XX: XX octets of response data available.
    ResponseAvailable(u8),
    Other(u8, u8),
}

impl StatusWord {
    pub fn from_bytes(sw1: u8, sw2: u8) -> Self {
        match (sw1, sw2) {
            (0x90, 0x00) => StatusWord::Ok,
            (0x91, n) => StatusWord::ProactiveCommandPending(n),
            (0x93, 0x00) => StatusWord::ToolkitBusy,
            (0x9E, n) => StatusWord::DataDownloadError(n),
            (0x9F, n) => StatusWord::ResponseAvailable(n),
            (a, b) => StatusWord::Other(a, b),
        }
    }

    pub fn to_bytes(self) -> [u8; 2] {
        match self {
            StatusWord::Ok => [0x90, 0x00],
            StatusWord::ProactiveCommandPending(n) => [0x91, n],
            StatusWord::ToolkitBusy => [0x93, 0x00],
            StatusWord::DataDownloadError(n) => [0x9E, n],
            StatusWord::ResponseAvailable(n) => [0x9F, n],
            StatusWord::Other(a, b) => [a, b],
        }
    }

    /// Whether the command was performed (`90 00` or `91 XX`).
    pub fn is_success(self) -> bool {
        matches!(
            self,
            StatusWord::Ok | StatusWord::ProactiveCommandPending(_)
        )
    }
}

/// A response APDU: data then the status word.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApduResponse {
    pub data: Vec<u8>,
    pub sw: StatusWord,
}

impl ApduResponse {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.data.clone();
        out.extend_from_slice(&self.sw.to_bytes());
        out
    }

    pub fn decode(input: &[u8]) -> Result<Self, CatError> {
        let [data @ .., sw1, sw2] = input else {
            return Err(CatError::Apdu {
                at: input.len(),
                reason: "shorter than the status word",
            });
        };
        Ok(Self {
            data: data.to_vec(),
            sw: StatusWord::from_bytes(*sw1, *sw2),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hex_literal::hex;
    use proptest::prelude::*;

    #[test]
    fn toolkit_apdus_have_the_published_headers() {
        assert_eq!(
            Apdu::envelope(hex!("D1 01 00").to_vec()).encode().unwrap(),
            hex!("80 C2 00 00 03 D1 01 00")
        );
        assert_eq!(Apdu::fetch(0x1A).encode().unwrap(), hex!("80 12 00 00 1A"));
        let tr = hex!("81 03 01 21 80 82 02 82 81 83 01 00");
        let mut expected = hex!("80 14 00 00 0C").to_vec();
        expected.extend_from_slice(&tr);
        assert_eq!(
            Apdu::terminal_response(tr.to_vec()).encode().unwrap(),
            expected
        );
        assert_eq!(
            Apdu::decode(&hex!("80 12 00 00 1A")).unwrap(),
            Apdu::fetch(0x1A)
        );
    }

    #[test]
    fn apdu_cases_decode() {
        let case1 = Apdu::decode(&hex!("00 70 00 00")).unwrap();
        assert_eq!((case1.data.len(), case1.le), (0, None));
        let case4 = Apdu::decode(&hex!("00 A4 00 04 02 3F 00 00")).unwrap();
        assert_eq!((case4.data, case4.le), (vec![0x3F, 0x00], Some(0)));
        assert_eq!(
            Apdu::decode(&hex!("80 C2 00 00 05 D1 01")),
            Err(CatError::Apdu {
                at: 7,
                reason: "data shorter than Lc"
            })
        );
        assert!(Apdu::decode(&hex!("80 C2 00")).is_err());
        assert!(Apdu::decode(&hex!("80 C2 00 00 01 AA BB CC")).is_err());
    }

    #[test]
    fn status_words() {
        for (bytes, sw) in [
            ([0x90, 0x00], StatusWord::Ok),
            ([0x91, 0x1A], StatusWord::ProactiveCommandPending(0x1A)),
            ([0x93, 0x00], StatusWord::ToolkitBusy),
            ([0x9E, 0x10], StatusWord::DataDownloadError(0x10)),
            ([0x9F, 0x0C], StatusWord::ResponseAvailable(0x0C)),
            ([0x6F, 0x00], StatusWord::Other(0x6F, 0x00)),
        ] {
            assert_eq!(StatusWord::from_bytes(bytes[0], bytes[1]), sw);
            assert_eq!(sw.to_bytes(), bytes);
        }
        let r = ApduResponse::decode(&hex!("AB CD 91 10")).unwrap();
        assert_eq!(r.data, vec![0xAB, 0xCD]);
        assert_eq!(r.sw, StatusWord::ProactiveCommandPending(0x10));
        assert!(ApduResponse::decode(&[0x90]).is_err());
    }

    proptest! {
        #[test]
        fn apdu_round_trips(h in any::<[u8; 4]>(), data in proptest::collection::vec(any::<u8>(), 0..=255), le in proptest::option::of(any::<u8>())) {
            let a = Apdu { cla: h[0], ins: h[1], p1: h[2], p2: h[3], data, le };
            prop_assert_eq!(Apdu::decode(&a.encode().unwrap()).unwrap(), a);
        }

        #[test]
        fn response_round_trips(data in proptest::collection::vec(any::<u8>(), 0..=256), sw in any::<[u8; 2]>()) {
            let r = ApduResponse { data, sw: StatusWord::from_bytes(sw[0], sw[1]) };
            prop_assert_eq!(ApduResponse::decode(&r.encode()).unwrap(), r);
        }

        #[test]
        fn apdu_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Apdu::decode(&bytes);
            let _ = ApduResponse::decode(&bytes);
        }
    }
}
