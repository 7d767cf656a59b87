//! The SMPP wire layer both sides share: the gateway's ESME and the simulated SMSC speak it
//! through these same codecs, and neither owns them (the independent peers, npm `smpp` and
//! PyPI `smpplib`, guard against a wire bug shared by both).
//!
//! Data flow: a frame cut from the byte stream by a shell (each keeps its own tokio-util
//! framing) goes to [`pdu::decode_frame`], which yields a `Command` or the `generic_nack` to
//! answer; [`pdu::encode_command`] serialises what goes out. [`dialect`] builds and reads the
//! USSD `submit_sm`/`deliver_sm` of one operator's flavour; [`smspp`] the SMS-PP secured
//! packets to SIM applets and their delivery receipts.

pub mod dialect;
pub mod pdu;
pub mod smspp;

/// rusmpp's owned PDU types under the paths the `rusmpp` crate gives them.
///
/// We depend on `rusmpp-core` rather than `rusmpp`, because `rusmpp` 0.4 always enables its
/// tokio codec, and this crate stays free of an async runtime. The types are the same: the
/// gateway's `rusmpp::pdus::SubmitSm` is this `rusmpp::pdus::SubmitSm`.
pub mod rusmpp {
    pub use rusmpp_core::command::owned::Command;
    pub use rusmpp_core::pdus::owned::Pdu;
    pub use rusmpp_core::{CommandId, CommandStatus};

    /// PDU bodies.
    pub mod pdus {
        pub use rusmpp_core::pdus::owned::*;
    }
    /// Optional parameters.
    pub mod tlvs {
        pub use rusmpp_core::tlvs::owned::*;
        pub use rusmpp_core::tlvs::TlvTag;
    }
    /// Field types.
    pub mod types {
        pub use rusmpp_core::types::owned::*;
    }
    /// Field values.
    pub mod values {
        pub use rusmpp_core::values::owned::{
            BroadcastAreaIdentifier, DestAddress, DistributionListName, MessagePayload,
            ServiceType, SmeAddress, Subaddress, UnsuccessSme,
        };
        pub use rusmpp_core::values::*;
    }
    /// Decoding traits and errors.
    pub mod decode {
        pub use rusmpp_core::decode::owned::*;
        pub use rusmpp_core::decode::DecodeErrorKind;
    }
    /// Encoding traits.
    pub mod encode {
        pub use rusmpp_core::encode::*;
    }
}
