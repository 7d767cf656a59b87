//! The GSM 7-bit default alphabet and its default extension table (3GPP TS 23.038 §6.2.1 and
//! §6.2.1.1), mapping text to unpacked septets and back. No national shift tables: Polish has
//! none, and the gateway falls back to UCS2 instead.
//!
//! Decoding is lenient where the specification asks receivers to be: an escape followed by a
//! code with no extension character shows the default-table character for that code; `1B 1B`
//! (reserved for a further extension table) shows a space; and a lone `1B` as the very last
//! septet also shows a space, because a truncated or badly split message should still display.

use super::TextError;

/// The escape septet that selects the extension table for the next septet.
pub const ESCAPE: u8 = 0x1B;

/// Default alphabet, indexed by septet. Index 0x1B is the escape and never decoded through this
/// table except as the spec's "display a space" fallback, hence the space there.
const DEFAULT: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', ' ', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// Default extension table: (code after the escape, character).
const EXTENSION: [(u8, char); 10] = [
    (0x0A, '\u{0C}'), // form feed (page break)
    (0x14, '^'),
    (0x28, '{'),
    (0x29, '}'),
    (0x2F, '\\'),
    (0x3C, '['),
    (0x3D, '~'),
    (0x3E, ']'),
    (0x40, '|'),
    (0x65, '€'),
];

/// Septet of `c` in the default table.
fn default_code(c: char) -> Option<u8> {
    // A match rather than a search of DEFAULT: this runs for every character of every prompt.
    let code = match c {
        'A'..='Z' | 'a'..='z' | '0'..='9' => c as u8,
        ' ' | '!' | '"' | '#' | '%' | '&' | '\'' | '(' | ')' | '*' | '+' | ',' | '-' | '.'
        | '/' | ':' | ';' | '<' | '=' | '>' | '?' | '\n' | '\r' => c as u8,
        '@' => 0x00,
        '£' => 0x01,
        '$' => 0x02,
        '¥' => 0x03,
        'è' => 0x04,
        'é' => 0x05,
        'ù' => 0x06,
        'ì' => 0x07,
        'ò' => 0x08,
        'Ç' => 0x09,
        'Ø' => 0x0B,
        'ø' => 0x0C,
        'Å' => 0x0E,
        'å' => 0x0F,
        'Δ' => 0x10,
        '_' => 0x11,
        'Φ' => 0x12,
        'Γ' => 0x13,
        'Λ' => 0x14,
        'Ω' => 0x15,
        'Π' => 0x16,
        'Ψ' => 0x17,
        'Σ' => 0x18,
        'Θ' => 0x19,
        'Ξ' => 0x1A,
        'Æ' => 0x1C,
        'æ' => 0x1D,
        'ß' => 0x1E,
        'É' => 0x1F,
        '¤' => 0x24,
        '¡' => 0x40,
        'Ä' => 0x5B,
        'Ö' => 0x5C,
        'Ñ' => 0x5D,
        'Ü' => 0x5E,
        '§' => 0x5F,
        '¿' => 0x60,
        'ä' => 0x7B,
        'ö' => 0x7C,
        'ñ' => 0x7D,
        'ü' => 0x7E,
        'à' => 0x7F,
        _ => return None,
    };
    Some(code)
}

/// Code (to follow an escape) of `c` in the extension table.
fn extension_code(c: char) -> Option<u8> {
    EXTENSION
        .iter()
        .find(|&&(_, ch)| ch == c)
        .map(|&(code, _)| code)
}

fn extension_char(code: u8) -> Option<char> {
    EXTENSION
        .iter()
        .find(|&&(c, _)| c == code)
        .map(|&(_, ch)| ch)
}

/// Number of septets `text` takes in GSM 7-bit (extension characters count 2), or `None` when
/// some character is in neither table.
pub fn gsm7_len(text: &str) -> Option<usize> {
    text.chars().try_fold(0usize, |n, c| {
        if default_code(c).is_some() {
            Some(n + 1)
        } else if extension_code(c).is_some() {
            Some(n + 2)
        } else {
            None
        }
    })
}

/// Map text to unpacked GSM 7-bit septets (extension characters become `0x1B` + code).
pub fn gsm7_encode(text: &str) -> Result<Vec<u8>, TextError> {
    let mut out = Vec::with_capacity(text.len());
    for (index, ch) in text.chars().enumerate() {
        if let Some(code) = default_code(ch) {
            out.push(code);
        } else if let Some(code) = extension_code(ch) {
            out.extend_from_slice(&[ESCAPE, code]);
        } else {
            return Err(TextError::NotGsm7 { ch, index });
        }
    }
    Ok(out)
}

/// Map unpacked septets back to text (`0x1B` escapes read through the extension table).
///
/// Septets above 0x7F are refused. See the module doc for the lenient escape rules.
pub fn gsm7_decode(septets: &[u8]) -> Result<String, TextError> {
    let mut out = String::with_capacity(septets.len());
    let mut i = 0;
    while let Some(&s) = septets.get(i) {
        if s > 0x7F {
            return Err(TextError::InvalidSeptet { value: s, at: i });
        }
        if s != ESCAPE {
            out.push(DEFAULT[usize::from(s)]);
            i += 1;
            continue;
        }
        match septets.get(i + 1) {
            // Trailing lone escape: shown as a space (see the module doc).
            None => out.push(' '),
            Some(&code) if code > 0x7F => {
                return Err(TextError::InvalidSeptet {
                    value: code,
                    at: i + 1,
                })
            }
            // Reserved for another extension table: TS 23.038 says display a space.
            Some(&ESCAPE) => out.push(' '),
            Some(&code) => out.push(extension_char(code).unwrap_or(DEFAULT[usize::from(code)])),
        }
        i += 2;
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every character the encoder accepts, from the tables themselves.
    fn charset() -> Vec<char> {
        let mut set: Vec<char> = DEFAULT
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != usize::from(ESCAPE))
            .map(|(_, &c)| c)
            .collect();
        set.extend(EXTENSION.iter().map(|&(_, c)| c));
        set
    }

    #[test]
    fn default_table_and_encoder_agree_on_every_code() {
        for (code, &ch) in DEFAULT.iter().enumerate() {
            if code == usize::from(ESCAPE) {
                continue;
            }
            assert_eq!(
                gsm7_encode(&ch.to_string()).unwrap(),
                vec![code as u8],
                "{ch:?}"
            );
            assert_eq!(gsm7_decode(&[code as u8]).unwrap(), ch.to_string());
        }
    }

    #[test]
    fn extension_characters_are_escape_pairs() {
        assert_eq!(gsm7_encode("€").unwrap(), vec![0x1B, 0x65]);
        assert_eq!(
            gsm7_encode("\u{0C}^{}\\[~]|€").unwrap(),
            vec![
                0x1B, 0x0A, 0x1B, 0x14, 0x1B, 0x28, 0x1B, 0x29, 0x1B, 0x2F, 0x1B, 0x3C, 0x1B, 0x3D,
                0x1B, 0x3E, 0x1B, 0x40, 0x1B, 0x65
            ]
        );
        assert_eq!(gsm7_decode(&[0x1B, 0x65, 0x1B, 0x3C]).unwrap(), "€[");
        assert_eq!(gsm7_len("a€"), Some(3));
        assert_eq!(gsm7_len("aź"), None);
    }

    #[test]
    fn ascii_letters_map_to_themselves_but_specials_move() {
        assert_eq!(gsm7_encode("Az09").unwrap(), b"Az09".to_vec());
        assert_eq!(gsm7_encode("@$_").unwrap(), vec![0x00, 0x02, 0x11]);
        assert!(matches!(
            gsm7_encode("ab`"),
            Err(TextError::NotGsm7 { ch: '`', index: 2 })
        ));
    }

    #[test]
    fn unknown_extension_code_shows_the_default_character() {
        assert_eq!(gsm7_decode(&[0x1B, 0x41]).unwrap(), "A");
        assert_eq!(gsm7_decode(&[0x1B, 0x00]).unwrap(), "@");
    }

    #[test]
    fn double_escape_and_trailing_escape_show_a_space() {
        assert_eq!(gsm7_decode(&[0x41, 0x1B, 0x1B, 0x42]).unwrap(), "A B");
        assert_eq!(gsm7_decode(&[0x41, 0x1B]).unwrap(), "A ");
    }

    #[test]
    fn octets_above_0x7f_are_refused_with_their_offset() {
        assert_eq!(
            gsm7_decode(&[0x41, 0x80]),
            Err(TextError::InvalidSeptet { value: 0x80, at: 1 })
        );
        assert_eq!(
            gsm7_decode(&[0x1B, 0xFF]),
            Err(TextError::InvalidSeptet { value: 0xFF, at: 1 })
        );
    }

    proptest! {
        #[test]
        fn gsm_charset_round_trips(idx in proptest::collection::vec(0usize..137, 0..300)) {
            let set = charset();
            let text: String = idx.iter().map(|&i| set[i % set.len()]).collect();
            let septets = gsm7_encode(&text).unwrap();
            prop_assert_eq!(Some(septets.len()), gsm7_len(&text));
            prop_assert_eq!(gsm7_decode(&septets).unwrap(), text);
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = gsm7_decode(&bytes);
        }
    }
}
