//! String normalisation for search: what makes "ﾔﾏﾀﾞ", "ヤマダ", "Ｙａｍａｄａ", "yamada" and
//! "Yámada" meet where a user expects them to.
//!
//! - NFKC folds the compatibility forms Japanese text is full of: half-width katakana become
//!   full-width (ﾔﾏﾀﾞ → ヤマダ, the voiced mark composed back onto its kana), full-width Latin
//!   letters and digits become ASCII (Ｙａｍａｄａ → Yamada), ideographic space becomes a space.
//! - Accents are removed by decomposing and dropping the *Latin* combining marks
//!   (U+0300–U+036F) only: the kana voiced marks (U+3099/U+309A) are letters of the name, not
//!   accents — ダ and タ must stay different.
//! - Case is folded with Unicode lowercase; runs of white space become one space, trimmed.
//!
//! Hiragana and katakana are deliberately not folded into each other: JP Core records the
//! reading (yomi) in katakana, and a clerk searching in hiragana is a different request.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// The form string search compares: width-, case- and accent-insensitive.
pub fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    // NFKC first (width folding, kana recomposition), then NFD to expose Latin accents.
    for c in s.nfkc().collect::<String>().nfd() {
        if is_latin_accent(c) {
            continue;
        }
        if c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.extend(c.to_lowercase());
    }
    // Recompose what NFD split but we kept (kana voiced marks, Hangul, …).
    out.nfc().collect()
}

fn is_latin_accent(c: char) -> bool {
    ('\u{0300}'..='\u{036F}').contains(&c) && is_combining_mark(c)
}

/// The characters of a normalised string, for prefix and n-gram tokens.
pub fn chars(s: &str) -> Vec<char> {
    s.chars().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn width_case_and_accents_fold() {
        assert_eq!(normalize("ﾔﾏﾀﾞ"), "ヤマダ");
        assert_eq!(normalize("ヤマダ"), "ヤマダ");
        assert_eq!(normalize("Ｙａｍａｄａ"), "yamada");
        assert_eq!(normalize("Yámada"), "yamada");
        assert_eq!(normalize("  Chalmers\u{3000}Peter  "), "chalmers peter");
        assert_eq!(normalize("ＴＡＲＯ１２３"), "taro123");
    }

    #[test]
    fn kana_voiced_marks_are_not_accents() {
        assert_ne!(normalize("ダ"), normalize("タ"));
        assert_ne!(normalize("パ"), normalize("ハ"));
        assert_eq!(normalize("ﾊﾟ"), normalize("パ"));
    }

    #[test]
    fn kanji_pass_through() {
        assert_eq!(normalize("山田 太郎"), "山田 太郎");
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Normalising twice changes nothing, so stored and queried forms always meet.
        #[test]
        fn normalize_is_idempotent(s in "\\PC{0,40}") {
            let once = normalize(&s);
            prop_assert_eq!(normalize(&once), once);
        }
    }
}
