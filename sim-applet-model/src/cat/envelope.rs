//! ENVELOPE (SMS-PP DOWNLOAD): `D1 L 82 02 83 81 [06 address] 8B L <SMS-DELIVER TPDU>`, how
//! the handset hands an MT SMS with PID 0x7F to the card. The TPDU is kept as octets; a secured
//! packet inside it is read with [`super::tpdu::SecuredDeliver`].

use super::objects::{Address, DeviceId, DeviceIdentities};
use super::tlv::{put_tlv, read_ber, tag, TlvList, CR, SMS_PP_DOWNLOAD};
use super::tpdu::SecuredDeliver;
use super::CatError;

/// The SMS-PP DOWNLOAD envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsPpDownload {
    pub devices: DeviceIdentities,
    /// Address of the service centre.
    pub address: Option<Address>,
    /// The SMS-DELIVER TPDU.
    pub tpdu: Vec<u8>,
}

impl SmsPpDownload {
    /// From the network to the UICC.
    pub fn new(address: Option<Address>, tpdu: Vec<u8>) -> Self {
        Self {
            devices: DeviceIdentities::new(DeviceId::Network, DeviceId::Uicc),
            address,
            tpdu,
        }
    }

    /// Wrap a secured packet SMS-DELIVER.
    pub fn secured(address: Option<Address>, deliver: &SecuredDeliver) -> Result<Self, CatError> {
        Ok(Self::new(address, deliver.encode()?))
    }

    /// The SMS-DELIVER as a secured packet.
    pub fn secured_deliver(&self) -> Result<SecuredDeliver, CatError> {
        SecuredDeliver::decode(&self.tpdu)
    }

    /// The BER-TLV `D1 ...` (the data of the ENVELOPE APDU).
    pub fn encode(&self) -> Result<Vec<u8>, CatError> {
        let mut b = Vec::new();
        put_tlv(
            &mut b,
            tag::DEVICE_IDENTITIES | CR,
            &self.devices.encode_value(),
        )?;
        if let Some(a) = &self.address {
            put_tlv(&mut b, tag::ADDRESS, &a.encode_value()?)?;
        }
        put_tlv(&mut b, tag::SMS_TPDU | CR, &self.tpdu)?;
        let mut out = Vec::with_capacity(b.len() + 3);
        put_tlv(&mut out, SMS_PP_DOWNLOAD, &b)?;
        Ok(out)
    }

    /// Decode the data of an ENVELOPE APDU; octets after the BER-TLV are refused.
    pub fn decode(input: &[u8]) -> Result<Self, CatError> {
        let (value, value_at, rest) = read_ber(input, SMS_PP_DOWNLOAD)?;
        if !rest.is_empty() {
            return Err(CatError::TrailingBytes {
                at: input.len() - rest.len(),
            });
        }
        let mut list = TlvList::parse(value, value_at)?;
        let devices = DeviceIdentities::decode_tlv(&list.require(tag::DEVICE_IDENTITIES | CR)?)?;
        let address = list
            .take(tag::ADDRESS)
            .map(|t| Address::decode_tlv(&t))
            .transpose()?;
        let tpdu = list.require(tag::SMS_TPDU | CR)?.value.to_vec();
        list.finish()?;
        Ok(Self {
            devices,
            address,
            tpdu,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cat::tpdu::PacketIei;
    use hex_literal::hex;
    use proptest::prelude::*;

    #[test]
    fn sms_pp_download_layout() {
        let deliver = SecuredDeliver {
            originator: Address::international("1234"),
            scts: hex!("32 11 13 01 00 00 00"),
            iei: PacketIei::Command,
            packet: hex!("00 10 15 06").to_vec(),
        };
        let env = SmsPpDownload::secured(Some(Address::international("112233445566778")), &deliver)
            .unwrap();
        let bytes = hex!(
            "D1 27 82 02 83 81 06 09 91 11 22 33 44 55 66 77 F8 8B 16
             44 04 91 21 43 7F F6 32 11 13 01 00 00 00 07 02 70 00 00 10 15 06"
        );
        assert_eq!(env.encode().unwrap(), bytes);
        let back = SmsPpDownload::decode(&bytes).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.secured_deliver().unwrap(), deliver);
    }

    #[test]
    fn missing_tpdu_and_truncated_envelope_are_named() {
        assert_eq!(
            SmsPpDownload::decode(&hex!("D1 04 82 02 83 81")),
            Err(CatError::MissingTlv { tag: 0x8B })
        );
        assert_eq!(
            SmsPpDownload::decode(&hex!("D1 08 82 02 83 81 8B 05 00 00")),
            Err(CatError::Truncated { tag: 0x8B, at: 6 })
        );
        assert_eq!(
            SmsPpDownload::decode(&hex!("D1 09 82 02 83 81 8B 05 00 00")),
            Err(CatError::Truncated { tag: 0xD1, at: 0 })
        );
        assert_eq!(
            SmsPpDownload::decode(&hex!("D0 00")),
            Err(CatError::UnexpectedTag { tag: 0xD0, at: 0 })
        );
    }

    proptest! {
        #[test]
        fn envelope_round_trips(addr in proptest::option::of("[0-9]{1,20}"), tpdu in proptest::collection::vec(any::<u8>(), 0..=200)) {
            let env = SmsPpDownload::new(addr.map(Address::international), tpdu);
            prop_assert_eq!(SmsPpDownload::decode(&env.encode().unwrap()).unwrap(), env);
        }

        #[test]
        fn envelope_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(env) = SmsPpDownload::decode(&bytes) {
                let _ = env.secured_deliver();
            }
        }
    }
}
