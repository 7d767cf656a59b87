//! `gateway text encode`: which alphabet a text goes out in, and its exact octets as SMS
//! segments or as a USSD string, so an operator can compare with a trace.

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use sim_applet_model::text::{choose_encoding, encode_ussd, gsm7_len, segment_sms, Encoding};

use super::spaced_hex;

#[derive(Debug, Subcommand)]
pub enum TextCommand {
    /// Show the encoding chosen for TEXT, its SMS segments (with the concatenation header) and
    /// its USSD string, in hex.
    Encode(EncodeArgs),
}

#[derive(Debug, Args)]
pub struct EncodeArgs {
    /// Concatenation reference for the SMS segments.
    #[arg(long, default_value_t = 1)]
    reference: u8,
    /// The text.
    text: String,
}

pub fn run(cmd: TextCommand, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    match cmd {
        TextCommand::Encode(args) => encode(args, out),
    }
}

fn encode(args: EncodeArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let text = args.text.as_str();
    let chars = text.chars().count();
    match choose_encoding(text) {
        Encoding::Gsm7 => writeln!(
            out,
            "encoding: GSM 7-bit default alphabet ({chars} characters, {} septets)",
            gsm7_len(text).unwrap_or(chars)
        )?,
        Encoding::Ucs2 => {
            let first_non_gsm = text
                .chars()
                .find(|c| gsm7_len(&c.to_string()).is_none())
                .map(|c| format!(", first character outside GSM 7-bit: {c:?}"))
                .unwrap_or_default();
            writeln!(
                out,
                "encoding: UCS2 ({chars} characters, {} UTF-16 units{first_non_gsm})",
                text.encode_utf16().count()
            )?
        }
    }
    let segments = segment_sms(text, args.reference)?;
    writeln!(out, "SMS: {} segment(s)", segments.len())?;
    for (i, seg) in segments.iter().enumerate() {
        writeln!(
            out,
            "  segment {}/{}: DCS {:02x}, UDL {}, UDH {}",
            i + 1,
            segments.len(),
            seg.dcs,
            seg.udl,
            seg.udh
                .as_deref()
                .map(spaced_hex)
                .unwrap_or_else(|| "none".into())
        )?;
        writeln!(out, "    user data: {}", hex::encode(&seg.user_data))?;
    }
    match encode_ussd(text) {
        Ok(ussd) => {
            writeln!(
                out,
                "USSD: CBS DCS {:02x} (SMPP data_coding {:02x}), {} characters, {} octets",
                ussd.cbs_dcs,
                ussd.smpp_data_coding,
                ussd.units,
                ussd.bytes.len()
            )?;
            writeln!(out, "    string: {}", hex::encode(&ussd.bytes))?;
        }
        Err(err) => writeln!(out, "USSD: does not fit one USSD string: {err}")?,
    }
    Ok(ExitCode::SUCCESS)
}
