//! `gateway ota decode|encode`: read and build secured packets the way an operator's engineer
//! checks a capture: every header field, the checksum recomputed and compared, the data
//! deciphered.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use sim_applet_model::ota::{
    decode_response, inspect_command, CcCheck, CommandHeader, CommandPacket, Counter, KeySet, Kic,
    Kid, PorSecurity, ResponsePacket, ResponseStatus, Spi, COMMAND_UDH, RESPONSE_UDH,
};

use super::{parse_hex, spaced_hex};

/// Exit status when the packet itself fails: a wrong checksum or a malformed packet.
const EXIT_PACKET_INVALID: u8 = 2;

#[derive(Debug, Subcommand)]
pub enum OtaCommand {
    /// Decode a command packet (with or without the `02 70 00` header) or a proof of receipt
    /// (`02 71 00 ...`), check its CC and decipher it. Exits 2 when the packet fails the check.
    Decode(DecodeArgs),
    /// Build a secured command packet, or a proof of receipt with `--por-status`.
    Encode(EncodeArgs),
}

#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// Ciphering key (hex): 16 or 24 octets for 3DES, 16/24/32 for AES.
    #[arg(long, value_name = "HEX")]
    kic: String,
    /// Checksum key (hex).
    #[arg(long, value_name = "HEX")]
    kid: String,
    /// For a proof of receipt: the SPI of the command it answers (its octet 2 says how the PoR
    /// is secured).
    #[arg(long, value_name = "HEX")]
    spi: Option<String>,
    /// For a proof of receipt: the KIc octet of the command it answers.
    #[arg(long, value_name = "HEX")]
    kic_octet: Option<String>,
    /// For a proof of receipt: the KID octet of the command it answers.
    #[arg(long, value_name = "HEX")]
    kid_octet: Option<String>,
    /// The packet, in hex (spaces and colons allowed).
    packet: String,
}

#[derive(Debug, Args)]
pub struct EncodeArgs {
    /// Ciphering key (hex).
    #[arg(long, value_name = "HEX")]
    kic: String,
    /// Checksum key (hex).
    #[arg(long, value_name = "HEX")]
    kid: String,
    /// Security parameter indicator, 2 octets (e.g. 0619: CC, ciphered, counter must be higher,
    /// PoR required with CC, ciphered, by SMS-SUBMIT).
    #[arg(long, value_name = "HEX")]
    spi: String,
    /// KIc octet: key index in the high nibble, algorithm in the low one (e.g. 35 = index 3, 3DES 2-key).
    #[arg(long, value_name = "HEX")]
    kic_octet: String,
    /// KID octet (e.g. 35, or 22 = index 2, AES CMAC).
    #[arg(long, value_name = "HEX")]
    kid_octet: String,
    /// Toolkit application reference, 3 octets.
    #[arg(long, value_name = "HEX")]
    tar: String,
    /// Replay counter (40 bits).
    #[arg(long, default_value_t = 0)]
    counter: u64,
    /// Prefix the SMS user data header (`02 70 00`, or `02 71 00` for a PoR).
    #[arg(long)]
    sms: bool,
    /// Build a proof of receipt with this response status (hex, e.g. 00) instead of a command.
    #[arg(long, value_name = "HEX")]
    por_status: Option<String>,
    /// Application data (hex).
    data: String,
}

pub fn run(cmd: OtaCommand, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    match cmd {
        OtaCommand::Decode(args) => decode(args, out),
        OtaCommand::Encode(args) => encode(args, out),
    }
}

fn one_octet(what: &str, s: &str) -> anyhow::Result<u8> {
    match parse_hex(what, s)?.as_slice() {
        [b] => Ok(*b),
        other => bail!("{what}: expected 1 octet, got {}", other.len()),
    }
}

fn fixed<const N: usize>(what: &str, s: &str) -> anyhow::Result<[u8; N]> {
    let bytes = parse_hex(what, s)?;
    <[u8; N]>::try_from(bytes.as_slice())
        .map_err(|_| anyhow::anyhow!("{what}: expected {N} octets, got {}", bytes.len()))
}

fn decode(args: DecodeArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let kic_key = parse_hex("--kic", &args.kic)?;
    let kid_key = parse_hex("--kid", &args.kid)?;
    let packet = parse_hex("packet", &args.packet)?;
    if packet.starts_with(&RESPONSE_UDH) {
        return decode_por(&args, &kic_key, &kid_key, &packet, out);
    }
    let (body, with_udh) = match packet.strip_prefix(&COMMAND_UDH) {
        Some(rest) => (rest, true),
        None => (packet.as_slice(), false),
    };
    writeln!(
        out,
        "packet: command packet{}",
        if with_udh {
            " (SMS user data header 02 70 00)"
        } else {
            ""
        }
    )?;
    if let (Some(cpl), Some(chl)) = (body.get(..2), body.get(2)) {
        let cpl = u16::from_be_bytes([cpl[0], cpl[1]]);
        writeln!(out, "CPL:   {cpl:04x} ({cpl} octets follow)")?;
        writeln!(out, "CHL:   {chl:02x} ({chl})")?;
    }
    let lookup = |h: &CommandHeader| KeySet::new(h.kic, &kic_key, h.kid, &kid_key).ok();
    let decoded = match inspect_command(body, &lookup) {
        Ok(d) => d,
        Err(err) => {
            writeln!(
                out,
                "INVALID: {err} (a card answers status {:02x})",
                err.response_status().to_byte()
            )?;
            return Ok(ExitCode::from(EXIT_PACKET_INVALID));
        }
    };
    let p = &decoded.packet;
    write_spi(out, p.spi)?;
    writeln!(
        out,
        "KIc:   {:02x} ({})",
        p.kic.to_byte(),
        describe_kic(p.kic)
    )?;
    writeln!(
        out,
        "KID:   {:02x} ({})",
        p.kid.to_byte(),
        describe_kid(p.kid)
    )?;
    writeln!(out, "TAR:   {}", spaced_hex(&p.tar))?;
    writeln!(
        out,
        "CNTR:  {} ({})",
        spaced_hex(&p.counter.to_bytes()),
        p.counter.value()
    )?;
    writeln!(out, "PCNTR: {}", decoded.padding_len)?;
    let verdict = write_cc(out, decoded.cc.as_ref())?;
    writeln!(
        out,
        "data:  {} ({} octets)",
        spaced_hex(&p.data),
        p.data.len()
    )?;
    Ok(verdict)
}

fn decode_por(
    args: &DecodeArgs,
    kic_key: &[u8],
    kid_key: &[u8],
    packet: &[u8],
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let (Some(spi), Some(kic), Some(kid)) = (&args.spi, &args.kic_octet, &args.kid_octet) else {
        bail!(
            "a proof of receipt is secured per the command it answers: give that command's --spi, --kic-octet and --kid-octet"
        );
    };
    let header = CommandHeader {
        spi: Spi::from_bytes(fixed::<2>("--spi", spi)?),
        kic: Kic::from_byte(one_octet("--kic-octet", kic)?),
        kid: Kid::from_byte(one_octet("--kid-octet", kid)?),
        tar: [0; 3],
    };
    let sec = PorSecurity::for_command(&header);
    let keys = KeySet::new(header.kic, kic_key, header.kid, kid_key)
        .context("keys do not fit the algorithms of --kic-octet/--kid-octet")?;
    writeln!(
        out,
        "packet: response packet (proof of receipt, header 02 71 00)"
    )?;
    writeln!(
        out,
        "secured as: checksum {:?}, ciphered {}",
        sec.checksum,
        yes_no(sec.ciphered)
    )?;
    if let (Some(rpl), Some(rhl)) = (packet.get(3..5), packet.get(5)) {
        let rpl = u16::from_be_bytes([rpl[0], rpl[1]]);
        writeln!(out, "RPL:   {rpl:04x} ({rpl} octets follow)")?;
        writeln!(out, "RHL:   {rhl:02x} ({rhl})")?;
    }
    let decoded = match decode_response(packet, &sec, &keys) {
        Ok(d) => d,
        Err(err) => {
            writeln!(out, "INVALID: {err}")?;
            return Ok(ExitCode::from(EXIT_PACKET_INVALID));
        }
    };
    let p = &decoded.packet;
    writeln!(out, "TAR:   {}", spaced_hex(&p.tar))?;
    writeln!(
        out,
        "CNTR:  {} ({})",
        spaced_hex(&p.counter.to_bytes()),
        p.counter.value()
    )?;
    writeln!(out, "PCNTR: {}", decoded.padding_len)?;
    writeln!(out, "RSC:   {:02x} ({:?})", p.status.to_byte(), p.status)?;
    let verdict = write_cc(out, decoded.cc.as_ref())?;
    writeln!(
        out,
        "data:  {} ({} octets)",
        spaced_hex(&p.data),
        p.data.len()
    )?;
    Ok(verdict)
}

fn write_cc(out: &mut dyn Write, cc: Option<&CcCheck>) -> anyhow::Result<ExitCode> {
    match cc {
        None => {
            writeln!(out, "CC:    none (the SPI asks for no checksum)")?;
            Ok(ExitCode::SUCCESS)
        }
        Some(cc) if cc.valid => {
            writeln!(out, "CC:    {} (valid)", spaced_hex(&cc.received))?;
            Ok(ExitCode::SUCCESS)
        }
        Some(cc) => {
            writeln!(
                out,
                "CC:    {} (INVALID: computed {}; CC failure, a card answers status 01)",
                spaced_hex(&cc.received),
                spaced_hex(&cc.computed)
            )?;
            Ok(ExitCode::from(EXIT_PACKET_INVALID))
        }
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn write_spi(out: &mut dyn Write, spi: Spi) -> anyhow::Result<()> {
    writeln!(out, "SPI:   {}", spaced_hex(&spi.to_bytes()))?;
    writeln!(
        out,
        "       checksum {:?}, ciphered {}, counter {:?}",
        spi.checksum,
        yes_no(spi.ciphered),
        spi.counter
    )?;
    writeln!(
        out,
        "       PoR {:?}, PoR checksum {:?}, PoR ciphered {}, PoR by SMS-SUBMIT {}",
        spi.por,
        spi.por_checksum,
        yes_no(spi.por_ciphered),
        yes_no(spi.por_via_sms_submit)
    )?;
    Ok(())
}

fn describe_kic(kic: Kic) -> String {
    format!("key index {}, {:?}", kic.index, kic.algorithm)
}

fn describe_kid(kid: Kid) -> String {
    format!("key index {}, {:?}", kid.index, kid.algorithm)
}

fn encode(args: EncodeArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let spi = Spi::from_bytes(fixed::<2>("--spi", &args.spi)?);
    let kic = Kic::from_byte(one_octet("--kic-octet", &args.kic_octet)?);
    let kid = Kid::from_byte(one_octet("--kid-octet", &args.kid_octet)?);
    let tar = fixed::<3>("--tar", &args.tar)?;
    let counter = Counter::new(args.counter).context("--counter")?;
    let data = parse_hex("data", &args.data)?;
    let keys = KeySet::new(
        kic,
        &parse_hex("--kic", &args.kic)?,
        kid,
        &parse_hex("--kid", &args.kid)?,
    )
    .context("keys do not fit the algorithms of --kic-octet/--kid-octet")?;
    let packet = match &args.por_status {
        None => {
            let command = CommandPacket {
                spi,
                kic,
                kid,
                tar,
                counter,
                data,
            };
            let bytes = command
                .encode(&keys)
                .context("encoding the command packet")?;
            writeln!(out, "packet: command packet")?;
            if args.sms {
                [COMMAND_UDH.as_slice(), &bytes].concat()
            } else {
                bytes
            }
        }
        Some(status) => {
            let status = ResponseStatus::from_byte(one_octet("--por-status", status)?);
            let por = ResponsePacket {
                tar,
                counter,
                status,
                data,
            };
            let header = CommandHeader { spi, kic, kid, tar };
            let sec = PorSecurity::for_command(&header);
            writeln!(out, "packet: response packet (proof of receipt)")?;
            if args.sms {
                por.encode(&sec, &keys)
            } else {
                por.encode_no_udh(&sec, &keys)
            }
            .context("encoding the proof of receipt")?
        }
    };
    write_spi(out, spi)?;
    writeln!(out, "length: {} octets", packet.len())?;
    writeln!(out, "hex:   {}", hex::encode(&packet))?;
    Ok(ExitCode::SUCCESS)
}
