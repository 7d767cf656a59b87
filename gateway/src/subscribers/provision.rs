//! Generating subscriber records from a population seed, and the subscriber file.
//!
//! Subscriber `i` of population `(seed, msisdn_base, applet_share)` has MSISDN
//! `msisdn_base + i`, the applet if [`super::has_applet`]`(seed, i, applet_share)`, the OTA keys
//! of `CardSecrets::derive(seed, i)` (KIc/KID `12`: AES key set 1, TAR `4D 43 41`), and a USSD
//! PIN equal to that card's initial PIN, stored only as a verifier. The simulated network
//! derives the same handsets from the same seed.
//!
//! File format (JSON lines): a header line
//! `{"format":"gateway-subscribers/1","count":..,"msisdn_base":..,"applet_share":..,"pin_verifier":"hmac-sha256(pepper,salt||pin)"}`
//! then one object per subscriber with `msisdn`, `index`, `has_applet`, `tar`, `kic`, `kid`
//! (hex), `kic_key`, `kid_key`, `k_auth` (hex, applet holders only), `pin_salt`, `pin_mac`.
//! No PIN and no seed is written, but the keys are secrets: the file is created with mode
//! 0600 and must stay readable by the gateway's user only. The same seed, parameters and
//! pepper always give the same bytes.

use std::io::{BufRead, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sim_applet_model::applet::gateway::{applet_kic, applet_kid};
use sim_applet_model::applet::protocol::TAR;
use sim_applet_model::applet::state::CardSecrets;
use sim_applet_model::handset::rng::{derive_seed, SplitMix64};
use thiserror::Error;

use super::verifier::{Pepper, PinVerifier, MAC_LEN, SALT_LEN};
use super::{has_applet, SubscriberRegistry};
use crate::routing::Msisdn;

/// Parameters of a generated population (the simulated network uses the same).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionParams {
    /// Population seed.
    pub seed: u64,
    /// Number of subscribers.
    pub count: u64,
    /// MSISDN of subscriber 0; subscriber `i` is `msisdn_base + i`.
    pub msisdn_base: u64,
    /// Share of subscribers whose SIM has the applet, in [0, 1].
    pub applet_share: f64,
}

/// Format tag of the header line.
pub const FORMAT: &str = "gateway-subscribers/1";
/// Longest line of a subscriber file.
pub const MAX_LINE: usize = 1024;
/// Stream of `derive_seed` for PIN salts.
const STREAM_SALT: u64 = 0x5341_4C54;

/// Why provisioning or loading failed.
#[derive(Debug, Error)]
pub enum ProvisionError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("provisioning parameters: {0}")]
    Params(String),
    #[error("subscriber file line {line}: {message}")]
    Line { line: usize, message: String },
}

/// OTA and answer-MAC keys of an applet holder.
#[derive(Clone, PartialEq, Eq)]
pub struct CardKeys {
    pub kic_key: [u8; 16],
    pub kid_key: [u8; 16],
    pub k_auth: [u8; 16],
}

impl std::fmt::Debug for CardKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardKeys(<redacted>)")
    }
}

/// The static part of one subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberRecord {
    pub msisdn: Msisdn,
    /// Index in the population (for the simulated network and for reports).
    pub index: u64,
    pub has_applet: bool,
    /// TAR of the applet.
    pub tar: [u8; 3],
    /// KIc and KID octets of the applet's key set.
    pub kic: u8,
    pub kid: u8,
    /// Keys (applet holders only).
    pub keys: Option<CardKeys>,
    /// USSD PIN verifier.
    pub pin: PinVerifier,
}

/// Check that the MSISDNs `msisdn_base ..= msisdn_base + count - 1` are valid numbers of one
/// length.
pub fn check_params(count: u64, msisdn_base: u64) -> Result<(), String> {
    let first =
        Msisdn::from_u64(msisdn_base).map_err(|e| format!("msisdn_base {msisdn_base}: {e}"))?;
    let last = msisdn_base
        .checked_add(count.saturating_sub(1))
        .ok_or_else(|| "msisdn_base + count overflows".to_string())?;
    let last_m = Msisdn::from_u64(last).map_err(|e| format!("last MSISDN {last}: {e}"))?;
    if first.as_str().len() != last_m.as_str().len() {
        return Err(format!("MSISDNs {msisdn_base}..={last} change length"));
    }
    Ok(())
}

/// The record of subscriber `index`.
pub fn generate_record(
    params: &ProvisionParams,
    index: u64,
    pepper: &Pepper,
) -> Result<SubscriberRecord, ProvisionError> {
    let msisdn = params
        .msisdn_base
        .checked_add(index)
        .ok_or_else(|| ProvisionError::Params("MSISDN overflows".into()))
        .and_then(|n| Msisdn::from_u64(n).map_err(|e| ProvisionError::Params(e.to_string())))?;
    let secrets = CardSecrets::derive(params.seed, index);
    let applet = has_applet(params.seed, index, params.applet_share);
    let mut salt = [0u8; SALT_LEN];
    SplitMix64::new(derive_seed(params.seed, index, STREAM_SALT)).fill(&mut salt);
    Ok(SubscriberRecord {
        msisdn,
        index,
        has_applet: applet,
        tar: TAR,
        kic: applet_kic().to_byte(),
        kid: applet_kid().to_byte(),
        keys: applet.then_some(CardKeys {
            kic_key: secrets.kic_key,
            kid_key: secrets.kid_key,
            k_auth: secrets.k_auth,
        }),
        pin: PinVerifier::new(pepper, salt, secrets.initial_pin.digits()),
    })
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    count: u64,
    msisdn_base: u64,
    applet_share: f64,
    pin_verifier: String,
}

const PIN_VERIFIER_KIND: &str = "hmac-sha256(pepper,salt||pin)";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    msisdn: String,
    index: u64,
    has_applet: bool,
    tar: String,
    kic: String,
    kid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kic_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    k_auth: Option<String>,
    pin_salt: String,
    pin_mac: String,
}

impl From<&SubscriberRecord> for Line {
    fn from(r: &SubscriberRecord) -> Self {
        Line {
            msisdn: r.msisdn.as_str().to_owned(),
            index: r.index,
            has_applet: r.has_applet,
            tar: hex::encode(r.tar),
            kic: hex::encode([r.kic]),
            kid: hex::encode([r.kid]),
            kic_key: r.keys.as_ref().map(|k| hex::encode(k.kic_key)),
            kid_key: r.keys.as_ref().map(|k| hex::encode(k.kid_key)),
            k_auth: r.keys.as_ref().map(|k| hex::encode(k.k_auth)),
            pin_salt: hex::encode(r.pin.salt),
            pin_mac: hex::encode(r.pin.mac),
        }
    }
}

fn hex_array<const N: usize>(field: &str, s: &str) -> Result<[u8; N], String> {
    let v = hex::decode(s).map_err(|e| format!("`{field}`: {e}"))?;
    v.try_into()
        .map_err(|v: Vec<u8>| format!("`{field}`: {} octets, expected {N}", v.len()))
}

impl TryFrom<Line> for SubscriberRecord {
    type Error = String;

    fn try_from(l: Line) -> Result<Self, String> {
        let keys = match (l.kic_key, l.kid_key, l.k_auth) {
            (Some(a), Some(b), Some(c)) => Some(CardKeys {
                kic_key: hex_array("kic_key", &a)?,
                kid_key: hex_array("kid_key", &b)?,
                k_auth: hex_array("k_auth", &c)?,
            }),
            (None, None, None) => None,
            _ => {
                return Err(
                    "`kic_key`, `kid_key`, `k_auth` must be all present or all absent".into(),
                )
            }
        };
        if l.has_applet != keys.is_some() {
            return Err("`has_applet` requires keys, and keys require `has_applet`".into());
        }
        Ok(SubscriberRecord {
            msisdn: Msisdn::parse(&l.msisdn).map_err(|e| format!("`msisdn`: {e}"))?,
            index: l.index,
            has_applet: l.has_applet,
            tar: hex_array("tar", &l.tar)?,
            kic: hex_array::<1>("kic", &l.kic)?[0],
            kid: hex_array::<1>("kid", &l.kid)?[0],
            keys,
            pin: PinVerifier {
                salt: hex_array::<SALT_LEN>("pin_salt", &l.pin_salt)?,
                mac: hex_array::<MAC_LEN>("pin_mac", &l.pin_mac)?,
            },
        })
    }
}

fn json_line<T: Serialize>(w: &mut impl Write, value: &T) -> Result<(), ProvisionError> {
    serde_json::to_writer(&mut *w, value).map_err(std::io::Error::from)?;
    w.write_all(b"\n")?;
    Ok(())
}

/// Write the subscriber file contents for `params` to `w`.
pub fn write_records(
    w: &mut impl Write,
    params: &ProvisionParams,
    pepper: &Pepper,
) -> Result<(), ProvisionError> {
    check_params(params.count, params.msisdn_base).map_err(ProvisionError::Params)?;
    if !(0.0..=1.0).contains(&params.applet_share) {
        return Err(ProvisionError::Params(
            "applet_share must be within 0..=1".into(),
        ));
    }
    json_line(
        w,
        &Header {
            format: FORMAT.into(),
            count: params.count,
            msisdn_base: params.msisdn_base,
            applet_share: params.applet_share,
            pin_verifier: PIN_VERIFIER_KIND.into(),
        },
    )?;
    for i in 0..params.count {
        json_line(w, &Line::from(&generate_record(params, i, pepper)?))?;
    }
    Ok(())
}

/// Write the subscriber file at `path` with mode 0600 (refusing to replace an existing file
/// unless `overwrite`). Returns the number of subscribers.
pub fn write_file(
    path: &Path,
    params: &ProvisionParams,
    pepper: &Pepper,
    overwrite: bool,
) -> Result<u64, ProvisionError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if overwrite {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(path)?;
    #[cfg(unix)]
    {
        // `mode` applies only when the file is created; an overwritten file is narrowed too.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    let mut w = std::io::BufWriter::new(file);
    write_records(&mut w, params, pepper)?;
    w.flush()?;
    w.get_ref().sync_all()?;
    Ok(params.count)
}

/// Read a subscriber file (header first; duplicates and malformed lines refused by line).
pub fn read_records(
    mut reader: impl BufRead,
    max_records: u64,
) -> Result<Vec<SubscriberRecord>, ProvisionError> {
    let mut buf = Vec::with_capacity(MAX_LINE + 1);
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut header: Option<Header> = None;
    let mut line = 0usize;
    loop {
        buf.clear();
        line += 1;
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        } else if buf.len() > MAX_LINE {
            return Err(ProvisionError::Line {
                line,
                message: format!("longer than {MAX_LINE} bytes"),
            });
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let bad = |message: String| ProvisionError::Line { line, message };
        let Some(h) = &header else {
            let h: Header =
                serde_json::from_slice(&buf).map_err(|e| bad(format!("header: {e}")))?;
            if h.format != FORMAT || h.pin_verifier != PIN_VERIFIER_KIND {
                return Err(bad(format!(
                    "unsupported format {:?} / verifier {:?}",
                    h.format, h.pin_verifier
                )));
            }
            if h.count > max_records {
                return Err(bad(format!(
                    "{} subscribers, more than the limit {max_records}",
                    h.count
                )));
            }
            header = Some(h);
            continue;
        };
        if out.len() as u64 >= h.count {
            return Err(bad(format!(
                "more subscribers than the header's count {}",
                h.count
            )));
        }
        let l: Line = serde_json::from_slice(&buf).map_err(|e| bad(e.to_string()))?;
        let record = SubscriberRecord::try_from(l).map_err(bad)?;
        if !seen.insert(record.msisdn.as_u64()) {
            return Err(bad(format!("duplicate MSISDN {}", record.msisdn.masked())));
        }
        out.push(record);
    }
    match header {
        None => Err(ProvisionError::Line {
            line,
            message: "empty file (no header)".into(),
        }),
        Some(h) if h.count != out.len() as u64 => Err(ProvisionError::Line {
            line,
            message: format!(
                "header announces {} subscribers, file has {}",
                h.count,
                out.len()
            ),
        }),
        Some(_) => Ok(out),
    }
}

impl SubscriberRegistry {
    /// Load a subscriber file.
    pub fn load(path: &Path, max_records: u64) -> Result<Self, ProvisionError> {
        let file = std::fs::File::open(path)?;
        let records = read_records(std::io::BufReader::new(file), max_records)?;
        Ok(Self::from_records(records))
    }

    /// Generate the population in memory (what `gateway provision` would write).
    pub fn generate(params: &ProvisionParams, pepper: &Pepper) -> Result<Self, ProvisionError> {
        check_params(params.count, params.msisdn_base).map_err(ProvisionError::Params)?;
        let records = (0..params.count)
            .map(|i| generate_record(params, i, pepper))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_records(records))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn params(seed: u64) -> ProvisionParams {
        ProvisionParams {
            seed,
            count: 50,
            msisdn_base: 48_600_000_000,
            applet_share: 0.7,
        }
    }

    fn pepper() -> Pepper {
        Pepper::new(b"test pepper, 16+ octets").unwrap()
    }

    fn file(seed: u64) -> Vec<u8> {
        let mut out = Vec::new();
        write_records(&mut out, &params(seed), &pepper()).unwrap();
        out
    }

    #[test]
    fn same_seed_gives_the_same_file() {
        assert_eq!(file(7), file(7));
        assert_ne!(file(7), file(8));
    }

    #[test]
    fn file_round_trips_and_holds_no_pin() {
        let bytes = file(7);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(!text.contains("\"pin\""));
        let records = read_records(&bytes[..], 1000).unwrap();
        assert_eq!(records.len(), 50);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(
                r,
                &generate_record(&params(7), i as u64, &pepper()).unwrap()
            );
        }
    }

    #[test]
    fn records_agree_with_card_secrets_and_applet_presence() {
        let p = params(11);
        let mut holders = 0;
        for i in 0..p.count {
            let r = generate_record(&p, i, &pepper()).unwrap();
            let card = CardSecrets::derive(p.seed, i);
            assert_eq!(r.msisdn.as_u64(), p.msisdn_base + i);
            assert_eq!(r.has_applet, has_applet(p.seed, i, p.applet_share));
            assert_eq!((r.tar, r.kic, r.kid), ([0x4D, 0x43, 0x41], 0x12, 0x12));
            if r.has_applet {
                holders += 1;
                let k = r.keys.as_ref().unwrap();
                assert_eq!(
                    (k.kic_key, k.kid_key, k.k_auth),
                    (card.kic_key, card.kid_key, card.k_auth)
                );
            } else {
                assert!(r.keys.is_none());
            }
            assert!(r.pin.verify(&pepper(), card.initial_pin.digits()));
            assert!(!r.pin.verify(&pepper(), b"99999"));
        }
        assert!(holders > 0 && holders < p.count);
    }

    #[test]
    fn malformed_files_are_refused_by_line() {
        let bytes = file(3);
        let text = String::from_utf8(bytes).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        let dup = lines[1].to_owned();
        lines[2] = &dup;
        let broken = lines.join("\n");
        assert!(matches!(
            read_records(broken.as_bytes(), 1000),
            Err(ProvisionError::Line { line: 3, .. })
        ));
        let truncated: String = text.lines().take(10).map(|l| format!("{l}\n")).collect();
        assert!(matches!(
            read_records(truncated.as_bytes(), 1000),
            Err(ProvisionError::Line { .. })
        ));
        assert!(matches!(
            read_records(&b"{\"x\":1}\n"[..], 1000),
            Err(ProvisionError::Line { line: 1, .. })
        ));
        assert!(matches!(
            read_records(text.as_bytes(), 10),
            Err(ProvisionError::Line { line: 1, .. })
        ));
        let junk = format!("{}\n{}\n", text.lines().next().unwrap(), "x".repeat(5000));
        assert!(matches!(
            read_records(junk.as_bytes(), 1000),
            Err(ProvisionError::Line { line: 2, .. })
        ));
    }

    #[test]
    fn written_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subs.jsonl");
        write_file(&path, &params(5), &pepper(), false).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(write_file(&path, &params(5), &pepper(), false).is_err());
        let reg = SubscriberRegistry::load(&path, 1000).unwrap();
        assert_eq!(reg.len(), 50);
        let gen = SubscriberRegistry::generate(&params(5), &pepper()).unwrap();
        let m = Msisdn::parse("48600000007").unwrap();
        assert_eq!(reg.get(&m), gen.get(&m));
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(check_params(10, 48_600_000_000).is_ok());
        assert!(check_params(10, 99_999_999_995).is_err());
        assert!(check_params(1, 600_000_000).is_ok());
        assert!(check_params(1, 12).is_err());
    }
}
